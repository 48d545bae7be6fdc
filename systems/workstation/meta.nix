# Read by lib/ (the flake) and by `cargo xtask` (one nix eval for all meta files).
{
  system = "x86_64-linux";
  # Users of this host besides those with a homes/<user>@workstation directory.
  users = [ "bob" ];
}
