# The NixOS host `workstation`. lib/ adds Home Manager and the homes of its users
# (alice via homes/alice@workstation, bob via meta.nix).
{ pkgs, ... }:
{
  # Generate this file on the machine with `nixos-generate-config --show-hardware-config`
  # and commit it as systems/workstation/hardware-configuration.nix, then import it here:
  # imports = [ ./hardware-configuration.nix ];
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  networking.networkmanager.enable = true;
  time.timeZone = "Europe/Berlin";

  users.users.alice = {
    isNormalUser = true;
    extraGroups = [
      "wheel"
      "networkmanager"
    ];
  };
  users.users.bob.isNormalUser = true;

  environment.systemPackages = [ pkgs.vim ];
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];

  system.stateVersion = "26.05";
}
