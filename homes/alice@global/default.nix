# Merged into alice's standalone home only (`cargo xtask switch alice` on any machine),
# never into a NixOS host: Home Manager manages itself and the shell's nix setup here.
{ ... }:
{
  programs.home-manager.enable = true;
  targets.genericLinux.enable = true;
  programs.bash.profileExtra = ''
    # Standalone Home Manager on a non-NixOS machine: make nix's profile visible to login shells.
    if [ -e "$HOME/.nix-profile/etc/profile.d/nix.sh" ]; then
      . "$HOME/.nix-profile/etc/profile.d/nix.sh"
    fi
  '';
}
