# The NixOS host `@host@`. Written by `cargo xtask new-host`; it is yours to change.
# lib/ adds Home Manager and the homes of its users: those with a homes/<user>@@host@
# directory (`cargo xtask new-user <user> --host @host@`) and those listed in meta.nix.
# Deploy it with `cargo xtask switch --host @host@`.
{ pkgs, ... }:
{
  # Generate this file on the machine with `nixos-generate-config --show-hardware-config`
  # and commit it as systems/@host@/hardware-configuration.nix, then import it here:
  # imports = [ ./hardware-configuration.nix ];
  # Until then, the boot loader and file system below are placeholders.
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  networking.hostName = "@host@";
  networking.networkmanager.enable = true;

  # System-wide packages, from nixpkgs:
  # environment.systemPackages = with pkgs; [ vim ];
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];

  # The NixOS release this host was first installed with; do not change it later.
  system.stateVersion = "@stateVersion@";
}
