# Evaluates the module without nixpkgs, for .ci/nix-check: a stand-in for the few
# `lib` functions it uses, option defaults filled in the way the module system does,
# and `settings` layered on top. Returns the unit's start script, its LoadCredential
# and the assertions. Not a substitute for `nix flake check`; it catches a misspelt
# option, a wrong attribute path or a type error in the module's own code.
{
  settings ? { },
}:

let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    elem
    filter
    isAttrs
    isString
    listToAttrs
    map
    match
    replaceStrings
    substring
    stringLength
    ;

  option = attrs: attrs // { _type = "option"; };
  isOption = v: isAttrs v && (v._type or null) == "option";

  checked = name: check: { inherit name check; };

  lib = {
    mkOption = option;
    mkEnableOption =
      name:
      option {
        default = false;
        type = types.bool;
        description = "Whether to enable ${name}.";
      };
    mkPackageOption =
      pkgs: name: _:
      option {
        default = pkgs.${name};
        type = types.package;
      };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    optionals = condition: list: if condition then list else [ ];
    optionalString = condition: s: if condition then s else "";
    boolToString = b: if b then "true" else "false";
    inherit concatStringsSep;
    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    max = a: b: if a > b then a else b;
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    getExe' = pkg: exe: "${pkg.outPath}/bin/${exe}";
    escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
    inherit types;
  };

  escapeShellArg =
    arg:
    if match "[[:alnum:],._+:@%/=-]+" arg != null then
      arg
    else
      "'${replaceStrings [ "'" ] [ "'\\''" ] arg}'";

  types = {
    str = checked "str" isString;
    bool = checked "bool" builtins.isBool;
    port = checked "port" (v: builtins.isInt v && v >= 0 && v <= 65535);
    package = checked "package" isAttrs;
    strMatching = re: checked "strMatching ${re}" (v: isString v && match re v != null);
    listOf = t: checked "listOf ${t.name}" (v: builtins.isList v && all t.check v);
    nullOr = t: checked "nullOr ${t.name}" (v: v == null || t.check v);
    enum = values: checked "enum" (v: elem v values);
    ints.positive = checked "positive int" (v: builtins.isInt v && v > 0);
  };

  pkgs = {
    sse-cluster.outPath = "/nix/store/00000000000000000000000000000000-sse-cluster";
    writeShellScript = name: text: { inherit name text; };
  };

  # Option values: the setting when given (type-checked), the default otherwise.
  values =
    options: given:
    let
      unknown = filter (n: !(options ? ${n})) (attrNames given);
    in
    if unknown != [ ] then
      throw "unknown options: ${concatStringsSep ", " unknown}"
    else
      listToAttrs (
        map (name: {
          inherit name;
          value =
            let
              opt = options.${name};
            in
            if isOption opt then
              let
                v = given.${name} or opt.default;
              in
              if opt.type.check v then v else throw "option ${name}: not a ${opt.type.name}"
            else
              values opt (given.${name} or { });
        }) (attrNames options)
      );

  module = import ./default.nix;
  self = module {
    inherit lib pkgs;
    config.services.sse-cluster = cfg;
  };
  cfg = values self.options.services.sse-cluster settings;
  service = self.config.content.systemd.services.sse-cluster.serviceConfig;
in
{
  enabled = self.config.condition;
  start = service.ExecStart.text;
  inherit (service) LoadCredential LimitNOFILE;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) self.config.content.assertions);
}
