# Merged into @user@'s standalone home only (`cargo xtask switch @user@` on any machine),
# never into a NixOS host: settings for machines where Home Manager runs on its own.
# Host-specific settings go in homes/@user@@<host>/default.nix instead.
{ ... }:
{
  # Let Home Manager install and manage itself (the `home-manager` command).
  programs.home-manager.enable = true;

  # On a Linux distribution other than NixOS, integrate with it (XDG_DATA_DIRS, fonts):
  # targets.genericLinux.enable = true;
}
