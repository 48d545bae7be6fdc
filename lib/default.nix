# Pure discovery: homes/ and systems/ -> flake outputs.
#
# No nixpkgs is needed to evaluate this file: the builders come in as arguments, so tests
# evaluate it with stub builders and the real flake passes Home Manager's and NixOS'.
# The naming rules, supported systems and defaults are data, stated once in Cargo.toml's
# [workspace.metadata.xtask] (flake.nix passes that table as `settings`; the xtask reads the
# same table). The merge rules are stated here (and in xtask/src/repo.rs):
#   homes/<user>            base home, used everywhere
#   homes/<user>@global     merged into the standalone home only
#   homes/<user>@<host>     merged into <host>'s integrated home only (never standalone)
#   systems/<host>/         a NixOS host; meta.nix = { system = "..."; users = [ ... ]; }
#   droids/<name>/          a Nix-on-Droid phone; homes/<user> + homes/<user>@<name> are its
#                           Home Manager part (one user per phone)
# A meta.nix may also say deploy = { targetHost; buildOn; tags; sshOpts; }: data for
# `cargo xtask deploy`, which reads it itself; lib/ ignores it.
{
  homesDir,
  systemsDir,
  droidsDir ? null,
  # { system, username, modules } -> a Home Manager configuration (with .activationPackage)
  mkHome,
  # { system, hostName, modules, users } -> a NixOS configuration (with .config.system.build.toplevel);
  # `users` maps each user of the host to its home modules (already inside `modules`).
  mkSystem,
  # { system, name, modules, homeModules } -> a Nix-on-Droid configuration (with
  # .activationPackage); `homeModules` are the phone's Home Manager modules.
  mkDroid ? null,
  # The Home Manager NixOS module, imported into every host.
  homeManagerModule ? { },
  # Cargo.toml's [workspace.metadata.xtask], as builtins.fromTOML reads it.
  settings,
}:
let
  setting =
    key:
    settings.${key}
      or (throw "Cargo.toml: [workspace.metadata.xtask] has no ${key}; add it (the repository's Cargo.toml states every key)");
  defaultSystem = setting "default-system";
  backupExtension = setting "backup-extension";
  stateVersion = setting "state-version";
  supportedSystems = setting "supported-systems";
  # NixOS runs on Linux only; a Mac's home is a standalone home.
  hostSystemsAllowed = setting "host-systems";
  namePattern = setting "name-pattern";
  reservedHost = setting "reserved-host";
  # The longest user name Linux accepts (useradd) and the longest host name (RFC 1123).
  maxUserLength = setting "max-user-length";
  maxHostLength = setting "max-host-length";

  inherit (builtins)
    attrNames
    elem
    filter
    foldl'
    listToAttrs
    match
    pathExists
    readDir
    ;

  mapToAttrs = f: names: listToAttrs (map f names);
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  isDarwin = system: match ".*-darwin" system != null;

  dirsOf =
    dir:
    if pathExists dir then
      let
        entries = readDir dir;
      in
      filter (n: entries.${n} == "directory") (attrNames entries)
    else
      [ ];

  validName =
    max: name: name != null && match namePattern name != null && builtins.stringLength name <= max;

  # "alice" -> { user = "alice"; part = null; }, "alice@ws" -> { user = "alice"; part = "ws"; }
  parseHomeDir =
    dir:
    let
      m = match "([^@]*)(@([^@]*))?" dir;
      user = builtins.elemAt m 0;
      part = builtins.elemAt m 2;
    in
    if m == null || !(validName maxUserLength user) || !(part == null || validName maxHostLength part) then
      throw "homes/${dir}: invalid name; use <user>, <user>@global or <user>@<host> where each name matches ${namePattern} (users at most ${toString maxUserLength} characters, hosts ${toString maxHostLength})"
    else
      { inherit user part; };

  homeDirs = map (dir: parseHomeDir dir // { inherit dir; }) (dirsOf homesDir);
  # user -> its parts (null for the base, "global", or a host), and host -> users with a
  # homes/<user>@<host> part: one pass each (builtins.groupBy, Nix >= 2.5), so a thousand
  # homes stay linear.
  partsOf = builtins.mapAttrs (_: map (h: h.part)) (builtins.groupBy (h: h.user) homeDirs);
  hostPartUsers = builtins.mapAttrs (_: map (h: h.user)) (
    builtins.groupBy (h: h.part) (filter (h: h.part != null && h.part != reservedHost) homeDirs)
  );
  users = filter (user: hasPart user null) (attrNames partsOf);
  hasPart = user: part: elem part (partsOf.${user} or [ ]);
  homePath = dir: homesDir + "/${dir}";

  checkSystem =
    where: allowed: system:
    if elem system allowed then
      system
    else
      throw "${where}: system \"${toString system}\" is not supported here; use one of ${toString allowed}";

  # meta.nix must be an attribute set: `[ ].system or default` is the default in Nix, so a
  # wrong shape would otherwise pass unnoticed.
  readMeta =
    label: file:
    let
      meta = if pathExists file then import file else { };
    in
    if builtins.isAttrs meta then
      meta
    else
      throw "${label}: meta.nix is a ${builtins.typeOf meta}, not an attribute set; write it like { system = \"x86_64-linux\"; users = [ \"alice\" ]; }";

  # name -> system, from <dir>/<name>/meta.nix or the default: each home's and host's
  # system is read once, not once per supported system.
  systemsOf =
    label: dir: allowed: names:
    mapToAttrs (name: {
      inherit name;
      value = checkSystem "${label}/${name}/meta.nix" allowed (
        (readMeta "${label}/${name}/meta.nix" (dir + "/${name}/meta.nix")).system or defaultSystem
      );
    }) names;
  homeSystems = systemsOf "homes" homesDir supportedSystems users;

  # Module list of a user's standalone home: base, then @global when present.
  standaloneModules =
    user:
    [ (homePath user) ]
    ++ (if hasPart user reservedHost then [ (homePath "${user}@${reservedHost}") ] else [ ]);

  # Module list of a user's home on a host: base (when present), then @<host> when present.
  hostHomeModules =
    host: user:
    (if hasPart user null then [ (homePath user) ] else [ ])
    ++ (if hasPart user host then [ (homePath "${user}@${host}") ] else [ ]);

  # Defaults every home gets; all are mkDefault-level so a home can override them.
  homeDefaults =
    { system, user }:
    { lib, ... }:
    {
      home.username = lib.mkDefault user;
      home.homeDirectory = lib.mkDefault (if isDarwin system then "/Users/${user}" else "/home/${user}");
      home.stateVersion = lib.mkDefault stateVersion;
    };

  mkStandalone =
    system: user:
    mkHome {
      inherit system;
      username = user;
      modules = standaloneModules user ++ [ (homeDefaults { inherit system user; }) ];
    };

  hosts =
    let
      names = dirsOf systemsDir;
    in
    if elem reservedHost names then
      throw "systems/${reservedHost}: '${reservedHost}' is reserved for homes/<user>@${reservedHost}; rename the host"
    else
      filter (
        h:
        if !(validName maxHostLength h) then
          throw "systems/${h}: invalid host name; it must match ${namePattern} (at most ${toString maxHostLength} characters)"
        else
          true
      ) names;

  hostMeta = host: readMeta "systems/${host}/meta.nix" (systemsDir + "/${host}/meta.nix");
  hostSystems = systemsOf "systems" systemsDir hostSystemsAllowed hosts;

  # A host's users: every user with a homes/<user>@<host> directory, plus meta.nix `users`.
  hostUsers =
    host:
    let
      listed = (hostMeta host).users or [ ];
    in
    if builtins.isList listed && builtins.all (u: builtins.isString u && validName maxUserLength u) listed then
      unique ((hostPartUsers.${host} or [ ]) ++ listed)
    else
      throw "systems/${host}/meta.nix: users must be a list of user names matching ${namePattern}, like users = [ \"alice\" ];";

  mkHost =
    host:
    let
      system = hostSystems.${host};
      homes = mapToAttrs (user: {
        name = user;
        value = hostHomeModules host user;
      }) (hostUsers host);
      integration =
        { lib, ... }:
        {
          networking.hostName = lib.mkDefault host;
          home-manager.useGlobalPkgs = lib.mkDefault true;
          home-manager.useUserPackages = lib.mkDefault true;
          home-manager.backupFileExtension = lib.mkDefault backupExtension;
          home-manager.users = mapToAttrs (user: {
            name = user;
            value = {
              imports = homes.${user};
              home.stateVersion = lib.mkDefault stateVersion;
            };
          }) (attrNames homes);
          users.users = mapToAttrs (user: {
            name = user;
            value.isNormalUser = lib.mkDefault true;
          }) (attrNames homes);
        };
    in
    mkSystem {
      inherit system;
      hostName = host;
      users = homes;
      modules = [
        (systemsDir + "/${host}")
        homeManagerModule
        integration
      ];
    };

  homeConfigurations = mapToAttrs (user: {
    name = user;
    value = mkStandalone homeSystems.${user} user;
  }) users;

  nixosConfigurations = mapToAttrs (host: {
    name = host;
    value = mkHost host;
  }) hosts;

  droids =
    let
      names = if droidsDir == null then [ ] else dirsOf droidsDir;
    in
    filter (
      d:
      if !(validName maxHostLength d) || d == reservedHost then
        throw "droids/${d}: invalid name; it must match ${namePattern} (at most ${toString maxHostLength} characters, not ${reservedHost})"
      else if elem d hosts then
        throw "droids/${d}: systems/${d} has the same name; rename one of them"
      else if mkDroid == null then
        throw "droids/${d}: lib/ was given no mkDroid builder; pass nix-on-droid's (see flake.nix)"
      else
        true
    ) names;
  droidSystems = systemsOf "droids" droidsDir hostSystemsAllowed droids;
  droidUsers = droid: hostPartUsers.${droid} or [ ];

  mkDroidConfig =
    droid:
    let
      system = droidSystems.${droid};
      users = droidUsers droid;
      homeModules =
        if builtins.length users > 1 then
          throw "droids/${droid}: ${toString users} all have a homes/<user>@${droid} part, but Nix-on-Droid has one user; keep one"
        else
          builtins.concatMap (user: hostHomeModules droid user) users
          ++ [
            (
              { lib, ... }:
              {
                home.stateVersion = lib.mkDefault stateVersion;
              }
            )
          ];
    in
    mkDroid {
      inherit system homeModules;
      name = droid;
      modules = [ (droidsDir + "/${droid}") ];
    };

  nixOnDroidConfigurations = mapToAttrs (droid: {
    name = droid;
    value = mkDroidConfig droid;
  }) droids;
in
{
  inherit homeConfigurations nixosConfigurations nixOnDroidConfigurations;

  # The same homes for every supported system, so `cargo xtask build-home` can pick the
  # machine's own architecture without editing meta.nix.
  legacyPackages = mapToAttrs (system: {
    name = system;
    value.homeConfigurations = mapToAttrs (user: {
      name = user;
      value = mkStandalone system user;
    }) users;
  }) supportedSystems;

  checks = mapToAttrs (system: {
    name = system;
    value =
      mapToAttrs (user: {
        name = "home-${user}";
        value = homeConfigurations.${user}.activationPackage;
      }) (filter (user: homeSystems.${user} == system) users)
      // mapToAttrs (host: {
        name = "system-${host}";
        value = nixosConfigurations.${host}.config.system.build.toplevel;
      }) (filter (host: hostSystems.${host} == system) hosts)
      // mapToAttrs (droid: {
        name = "droid-${droid}";
        value = nixOnDroidConfigurations.${droid}.activationPackage;
      }) (filter (droid: droidSystems.${droid} == system) droids);
  }) supportedSystems;
}
