# alice's base home: used standalone (with alice@global) and on every host she has.
{ pkgs, ... }:
{
  home.packages = with pkgs; [
    ripgrep
    fd
    jq
    htop
  ];

  programs.git = {
    enable = true;
    userName = "Alice Example";
    userEmail = "alice@example.org";
    extraConfig.init.defaultBranch = "main";
  };

  programs.bash = {
    enable = true;
    shellAliases.ll = "ls -l";
    historyControl = [ "ignoredups" ];
  };

  programs.direnv = {
    enable = true;
    nix-direnv.enable = true;
  };

  home.sessionVariables.EDITOR = "vim";
}
