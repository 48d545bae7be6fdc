{
  description = "homelab: NixOS hosts and Home Manager homes, deployed with cargo xtask";

  # flake.lock is created by the first `nix flake lock` on a machine with network; commit it.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    home-manager = {
      url = "github:nix-community/home-manager/release-26.05";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    # Phones: droids/<name> -> nixOnDroidConfigurations.<name>.
    nix-on-droid = {
      url = "github:nix-community/nix-on-droid/release-24.05";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.home-manager.follows = "home-manager";
    };
  };

  outputs =
    {
      nixpkgs,
      home-manager,
      nix-on-droid,
      ...
    }:
    let
      # The repo defaults and naming rules live once, in Cargo.toml, for the xtask and for
      # Nix alike.
      settings = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.metadata.xtask;
    in
    import ./lib {
      homesDir = ./homes;
      systemsDir = ./systems;
      droidsDir = ./droids;
      inherit settings;
      homeManagerModule = home-manager.nixosModules.home-manager;
      mkHome =
        { system, modules, ... }:
        home-manager.lib.homeManagerConfiguration {
          pkgs = nixpkgs.legacyPackages.${system};
          inherit modules;
        };
      mkSystem =
        { system, modules, ... }:
        nixpkgs.lib.nixosSystem {
          inherit system modules;
        };
      # Nix-on-Droid's own builder; the phone's Home Manager part goes in home-manager.config.
      mkDroid =
        {
          system,
          modules,
          homeModules,
          ...
        }:
        nix-on-droid.lib.nixOnDroidConfiguration {
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ nix-on-droid.overlays.default ];
          };
          modules = modules ++ [
            {
              home-manager.config.imports = homeModules;
              home-manager.backupFileExtension = settings.backup-extension;
              home-manager.useGlobalPkgs = true;
            }
          ];
        };
    };
}
