# bob's base home: a minimal shell and git setup.
{ pkgs, ... }:
{
  home.packages = [ pkgs.tmux ];

  programs.git = {
    enable = true;
    userName = "Bob Example";
    userEmail = "bob@example.org";
  };

  programs.bash.enable = true;
}
