# Merged into alice's standalone home only (`cargo xtask switch alice` on any machine),
# never into a NixOS host: Home Manager manages itself and the shell's nix setup here.
{ pkgs, ... }:
{
  programs.home-manager.enable = true;
  # Home Manager asserts this option is Linux-only; the same home also builds for macOS.
  targets.genericLinux.enable = pkgs.stdenv.hostPlatform.isLinux;
  programs.bash.profileExtra = ''
    # Standalone Home Manager on a non-NixOS machine: make nix's profile visible to login shells.
    if [ -e "$HOME/.nix-profile/etc/profile.d/nix.sh" ]; then
      . "$HOME/.nix-profile/etc/profile.d/nix.sh"
    fi
  '';
}
