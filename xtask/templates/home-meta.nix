# Read by lib/ (the flake) and by `cargo xtask`: the system of @user@'s standalone home.
# Without this file the repo's default-system (Cargo.toml) applies.
{
  system = "@system@";
}
