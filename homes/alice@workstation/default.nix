# Merged into alice's home on the NixOS host `workstation` only.
{ pkgs, ... }:
{
  home.packages = [ pkgs.firefox ];
  programs.git.extraConfig.credential.helper = "libsecret";
}
