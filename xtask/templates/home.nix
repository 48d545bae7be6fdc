# @user@'s base home: used by the standalone home (`cargo xtask switch @user@`) and on every
# NixOS host @user@ is a user of. Written by `cargo xtask new-user`; it is yours to change.
#
# The other parts of this home, each a directory beside this one:
#   homes/@user@@global/default.nix   merged into the standalone home only (new-user --global)
#   homes/@user@@<host>/default.nix   merged into that host's integrated home only (--host)
#   homes/@user@/meta.nix             { system = "aarch64-linux"; } for the standalone home
# lib/ sets home.username, home.homeDirectory and home.stateVersion. Override the first two
# in homes/@user@@global (on NixOS hosts they come from users.users and must not be set twice).
{ pkgs, ... }:
{
  # Packages for this user, from nixpkgs (search.nixos.org lists the names):
  # home.packages = with pkgs; [
  #   ripgrep
  #   jq
  # ];

  programs.git = {
    enable = true;
    # Your identity in commits; `new-user --full-name … --email …` fills it in:
    # userName = "Your Name";
    # userEmail = "you@example.org";
    extraConfig.init.defaultBranch = "main";
  };

  programs.bash = {
    enable = true;
    historyControl = [ "ignoredups" ];
    shellAliases.ll = "ls -l";
  };

  home.sessionVariables.EDITOR = "vi";
}
