# Read by lib/ (the flake) and by `cargo xtask` (one nix eval for all meta files).
{
  system = "@system@";
  # Users of this host besides those with a homes/<user>@@host@ directory.
  users = [ ];
}
