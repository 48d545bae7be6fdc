# Merged into @user@'s home on the NixOS host `@host@` only, never into the standalone home;
# deploy it with `cargo xtask switch --host @host@`. The host itself is systems/@host@.
# Settings for every machine go in homes/@user@/default.nix instead.
{ ... }:
{
  # For example, a credential helper only this host has:
  # programs.git.extraConfig.credential.helper = "libsecret";
}
