# The target side of `cargo xtask deploy` (POSIX sh; no agent of our own is installed:
# the deployer sends this file over ssh with every deployment).
#
#   sh deploy.sh STATE_DIR activate KIND GENERATION TOKEN CONFIRM_SECONDS BACKUP_EXT
#   sh deploy.sh STATE_DIR activate-on-go KIND GENERATION TOKEN CONFIRM_SECONDS BACKUP_EXT
#   sh deploy.sh STATE_DIR confirm  KIND GENERATION TOKEN
#   sh deploy.sh STATE_DIR current  KIND
#
# KIND is system (a NixOS toplevel), home (a Home Manager generation) or droid (a
# Nix-on-Droid generation). `activate`: lock, pre-flight (homes: the generation's own
# check script), then a detached worker arms the rollback timer (the canary), sets the
# profile and activates; the foreground shows the worker's log and exits with its status,
# so a dropped ssh connection stops neither. `activate-on-go` is `activate` once a line
# `go` arrives on stdin: the deployer opens this connection while it copies the closure,
# and says go when the copy is done (end of input instead: nothing changed, exit 7).
# `confirm` (a new ssh connection) takes the canary: the target keeps the generation (a
# host then makes it the boot default). If nobody confirms within CONFIRM_SECONDS, the
# timer takes the canary and rolls back: the previous generation's profile and activation.
#
# Exit status: 0 done; 1 activation failed (the previous generation restored); 2 the
# pre-flight refused (nothing changed); 3 confirm came too late (rolled back); 4 usage;
# 5 still activating; 6 busy: the profile's lock is held (nothing changed); 7 cancelled
# before anything changed (activate-on-go without a go).
set -u

dir=$1
cmd=$2
kind=$3
umask 077

say() { printf '%s\n' "$*"; }
fail() {
  say "error: $*" >&2
  exit "${code:-1}"
}

case $kind in
  system) profile=${XTASK_SYSTEM_PROFILE:-/nix/var/nix/profiles/system} ;;
  droid) profile=${XTASK_DROID_PROFILE:-/nix/var/nix/profiles/nix-on-droid} ;;
  home)
    state=${XDG_STATE_HOME:-$HOME/.local/state}
    if [ -d "$state/nix/profiles" ]; then
      profile=$state/nix/profiles/home-manager
    else
      profile=${NIX_STATE_DIR:-/nix/var/nix}/profiles/per-user/$USER/home-manager
    fi
    ;;
  *) code=4 fail "unknown kind $kind" ;;
esac

mkdir -p "$dir" || fail "cannot create $dir"
[ -O "$dir" ] || fail "$dir belongs to another user; remove it"

# The number N of the profile's current `…-N-link`, or nothing.
gen_number() {
  link=$(readlink "$profile" 2> /dev/null) || return 0
  say "$link" | sed -n 's/.*-\([0-9][0-9]*\)-link$/\1/p'
}

activate_generation() { # GENERATION ACTION
  case $kind in
    system)
      if [ -d /run/systemd/system ] && command -v systemd-run > /dev/null; then
        systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER --collect --no-ask-password \
          --pipe --quiet --service-type=exec --unit=xtask-deploy-switch-to-configuration \
          "$1/bin/switch-to-configuration" "$2"
      else
        "$1/bin/switch-to-configuration" "$2"
      fi
      rc=$?
      # 100: activated, a reboot is needed (not a failure).
      [ $rc = 0 ] || [ $rc = 100 ]
      ;;
    home) HOME_MANAGER_BACKUP_EXT=$backup "$1/activate" --driver-version 1 ;;
    droid) "$1/activate" ;;
  esac
}

set_profile() { # GENERATION
  case $kind in
    # Nix-on-Droid's activate sets its profile itself; an old-style Home Manager
    # generation (no gen-version) too.
    droid) return 0 ;;
    home) [ -e "$1/gen-version" ] || return 0 ;;
  esac
  mkdir -p "$(dirname "$profile")" && nix-env --profile "$profile" --set "$1"
}

# Back to the generation that was current before: its profile link, then its activation.
restore() { # PREVIOUS_NUMBER PREVIOUS_PATH
  new=$(gen_number)
  if [ -n "$1" ]; then
    [ "$new" = "$1" ] || nix-env --profile "$profile" --switch-generation "$1"
  else
    rm -f "$profile"
  fi
  [ -z "$new" ] || [ "$new" = "$1" ] || nix-env --profile "$profile" --delete-generations "$new" > /dev/null 2>&1 \
    || rm -f "$profile-$new-link"
  if [ -n "$2" ]; then
    activate_generation "$2" test || say "warning: re-activating $2 failed" >&2
  fi
}

# One change of a profile at a time. A home's lock is the one `cargo xtask switch`,
# rollback and gc take on this machine (an flock on the same file), so a local switch
# and a deployment of the same home never run at once; the holder is written into it, as
# they do, once the deployment is about to change something (announce).
lockfile() {
  if [ "$kind" = home ]; then
    say "${XDG_STATE_HOME:-$HOME/.local/state}/home-manager/switch.lock"
  else
    say "$dir/$kind.lock"
  fi
}
lock() {
  lockfile=$(lockfile)
  [ "$kind" != home ] || mkdir -p "$(dirname "$lockfile")" || fail "cannot create $(dirname "$lockfile")"
  command -v flock > /dev/null || return 0
  # Tried in a subshell first: a failed redirection of `exec` would end this shell with
  # status 2, which reads as "the pre-flight refused".
  (: >> "$lockfile") 2> /dev/null || fail "cannot open $lockfile"
  # Read-write without truncating: a blocked run leaves the holder's record as it was.
  exec 9<> "$lockfile"
  flock -n 9 && return 0
  if [ "$kind" = home ]; then
    holder=$(head -c 300 "$lockfile" 2> /dev/null)
    code=6 fail "a switch, rollback, gc or deployment of this home is running here (${holder:-another process}), or an activation it started is still running; wait for it to finish and deploy again (lock $lockfile)"
  fi
  code=6 fail "another deployment of this $kind is running here (lock $lockfile); wait for it and deploy again"
}

# Records this deployment as the lock's holder, for the message of a run that has to wait.
announce() {
  [ "$kind" = home ] || return 0
  printf 'pid %s: cargo xtask deploy of %s\n' "$$" "$gen" > "$lockfile" 2> /dev/null || true
}

preflight() { # GENERATION
  act=$1/activate
  [ -f "$act" ] || fail "$1 has no activate script: not a Home Manager generation"
  # The generation's own user checks (the lines at the top of activate), then its
  # check-link-targets script over its files: Home Manager's own verdict, read-only.
  checkStringEq() { [ "$2" = "$3" ] || fail "$1 is \"$2\" here, the home expects \"$3\""; }
  checkPathEq() { [ "$2" -ef "$3" ] || fail "$1 is \"$2\" here, the home expects \"$3\""; }
  checkUsername() { checkStringEq USER "$USER" "$1"; }
  checkHomeDirectory() { checkPathEq HOME "$HOME" "$1"; }
  checks=$(grep -E '^[[:space:]]*(checkStringEq|checkPathEq|checkUsername|checkHomeDirectory) ' "$act" | grep -v '\$(' || true)
  code=2
  eval "$checks"
  script=$(grep -o '/[^ "]*check-link-targets\.sh' "$act" | head -n 1)
  if [ -n "$script" ]; then
    files=$(readlink -f "$1/home-files")
    HOME_MANAGER_BACKUP_EXT=$backup find "$files" \( -type f -o -type l \) \
      -exec bash "$script" "$files" {} + \
      || fail "the pre-flight refuses this generation (Home Manager's check above): move the files it names away, or set a backup extension, and deploy again"
  fi
  code=1
}

case $cmd in
  current)
    readlink -f "$profile" 2> /dev/null || true
    ;;

  activate | activate-on-go)
    gen=$4 token=$5 timeout=$6 backup=$7
    if [ "$cmd" = activate-on-go ]; then
      word=
      read -r word || true
      [ "$word" = go ] || code=7 fail "cancelled by the deployer before activating: nothing changed"
    fi
    [ -d "$gen" ] || fail "$gen is not in this machine's store: the copy did not arrive"
    # A home's pre-flight runs under the lock. Taking it creates the lock file (in the
    # home) when there is none: then the pre-flight runs first too, so a refused
    # generation leaves the home as it was.
    [ "$kind" != home ] || [ -e "$(lockfile)" ] || preflight "$gen"
    lock
    [ "$kind" != home ] || preflight "$gen"
    announce
    log=$dir/$token.log status=$dir/$token.status
    rm -f "$log" "$status"
    # Created here, so the loop below never reads it before the worker has opened it.
    : > "$log"
    # The worker's end (it is our child) interrupts the wait below at once: no polling
    # for it. Its log is shown as it grows, every half second.
    trap : CHLD
    if command -v setsid > /dev/null; then
      setsid sh "$0" "$dir" worker "$kind" "$gen" "$token" "$timeout" "$backup" < /dev/null > "$log" 2>&1 &
    else
      (trap '' HUP PIPE; exec sh "$0" "$dir" worker "$kind" "$gen" "$token" "$timeout" "$backup") < /dev/null > "$log" 2>&1 &
    fi
    # The worker holds the lock from here (it inherited it); show its log as it grows.
    exec 9>&-
    shown=0 waited=0
    # Bounded: an activation that runs for 10 minutes is reported, not waited for forever.
    while :; do
      done=0
      [ ! -e "$status" ] || done=1
      size=$(wc -c < "$log" 2> /dev/null || echo 0)
      if [ "$size" -gt "$shown" ]; then
        tail -c +$((shown + 1)) "$log" | head -c $((size - shown))
        shown=$size
      fi
      [ $done = 0 ] && [ $waited -lt 1200 ] || break
      waited=$((waited + 1))
      sleep 0.5 &
      nap=$!
      # A status written since the check above is not waited for.
      [ -e "$status" ] || wait $nap
      kill $nap 2> /dev/null
    done
    [ -e "$status" ] || code=5 fail "the activation is still running after 10 minutes (log: $log)"
    exit "$(cat "$status")"
    ;;

  worker)
    gen=$4 token=$5 timeout=$6 backup=$7
    # The status appears whole (written aside, then renamed): whoever sees the file (the
    # foreground above, a confirm) reads the number, never an empty file being written.
    finish() { say "$1" > "$status.tmp" && mv "$status.tmp" "$status"; }
    trap '' HUP PIPE
    status=$dir/$token.status canary=$dir/$token.canary
    prev_number=$(gen_number)
    prev=$(readlink -f "$profile" 2> /dev/null || true)
    [ -e "$prev" ] || prev=
    # Armed before anything changes, so a connection lost at any point is covered.
    : > "$canary"
    (
      sleep "$timeout" 9>&-
      if mv "$canary" "$canary.expired" 2> /dev/null; then
        say "not confirmed within ${timeout}s: rolling back to ${prev:-no generation}"
        restore "$prev_number" "$prev"
        say "rolled back"
      fi
    ) < /dev/null >> "$dir/$token.rollback.log" 2>&1 &
    say $! > "$dir/$token.timer"
    if set_profile "$gen" && activate_generation "$gen" test; then
      say "activated $gen"
      finish 0
    else
      # Taken back from the timer: this failure is handled here and now.
      if mv "$canary" "$canary.failed" 2> /dev/null; then
        kill "$(cat "$dir/$token.timer")" 2> /dev/null
        say "activation failed: restoring ${prev:-no generation}"
        restore "$prev_number" "$prev"
      fi
      finish 1
    fi
    ;;

  confirm)
    gen=$4 token=$5
    canary=$dir/$token.canary status=$dir/$token.status
    # Still activating (the first connection was lost): the deployer asks again.
    [ -e "$status" ] || [ -e "$canary.expired" ] || code=5 fail "still activating"
    [ "$(cat "$status" 2> /dev/null)" != 1 ] || fail "the activation failed (the previous generation was restored)"
    if ! mv "$canary" "$canary.confirmed" 2> /dev/null; then
      code=3
      [ -e "$canary.expired" ] && fail "too late: the target had rolled back by itself"
      fail "nothing to confirm for $token (activation failed or never ran)"
    fi
    kill "$(cat "$dir/$token.timer")" 2> /dev/null
    # Confirmed: only now does a host boot into it.
    if [ "$kind" = system ]; then
      activate_generation "$gen" boot || fail "the new generation runs, but making it the boot default failed"
    fi
    rm -f "$dir/$token".*
    say confirmed
    ;;

  *) code=4 fail "unknown command $cmd" ;;
esac
