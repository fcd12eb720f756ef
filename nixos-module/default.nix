# services.sse-cluster: one broker node per host. Hosts that share `hosts` and the
# secret in `secretKeyFile` find each other through gossip and form one cluster.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.sse-cluster;

  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkOption
    mkPackageOption
    optionals
    types
    ;

  # The binary's duration syntax: a bare number of seconds, or units ms/s/m/h,
  # possibly combined ("1m30s").
  duration = types.strMatching "[0-9]+|([0-9]+(ms|s|m|h))+";

  durationOption =
    default: description:
    mkOption {
      type = duration;
      inherit default;
      example = "1m30s";
      inherit description;
    };

  # Ports below 1024 need CAP_NET_BIND_SERVICE; everything else runs with no
  # capability at all.
  privilegedPort = cfg.port < 1024;

  # Every option of `sse-cluster start` is passed explicitly, so the unit file shows
  # the whole configuration. tests/it/nix_module.rs checks these flags against the real
  # binary: it takes every string literal in this file that starts with `--` as a
  # flag passed to it, so mention flags elsewhere only inside backticks. The secrets
  # are not among them: they travel through the environment so they never show up in
  # the process list or the Nix store (the public key's path goes the same way).
  args = [
    "start"
    "--http.server.address=${cfg.address}"
    "--http.server.port=${toString cfg.port}"
    "--http.server.cors.enabled=${lib.boolToString cfg.cors.enable}"
    "--ui.enabled=${lib.boolToString cfg.ui.enable}"
    "--http.server.keepAlive=${cfg.keepAlive}"
    "--http.server.retry=${cfg.retry}"
    "--http.server.maxBodyBytes=${toString cfg.maxBodyBytes}"
    "--http.server.maxBulkBytes=${toString cfg.maxBulkBytes}"
    "--http.server.maxConnections=${toString cfg.maxConnections}"
    "--http.server.maxConnectionsPerAddress=${toString cfg.maxConnectionsPerAddress}"
    "--http.server.writeTimeout=${cfg.writeTimeout}"
    "--http.server.headerTimeout=${cfg.headerTimeout}"
    "--http.server.bodyTimeout=${cfg.bodyTimeout}"
    "--http.server.maxHeaderBytes=${toString cfg.maxHeaderBytes}"
    "--http.client.timeout=${cfg.clientTimeout}"
    "--shutdown.drainTimeout=${cfg.drainTimeout}"
    "--gossip.readyTimeout=${cfg.readyTimeout}"
    "--gossip.port=${toString cfg.gossipPort}"
    "--replay.events=${toString cfg.replay.events}"
    "--replay.age=${cfg.replay.age}"
    "--replay.maxBytes=${toString cfg.replay.maxBytes}"
    "--channels.max=${toString cfg.channels.max}"
    "--subscriber.buffer=${toString cfg.subscriberBuffer}"
    "--subscriber.maxChannels=${toString cfg.subscriberMaxChannels}"
    "--relay.queueEvents=${toString cfg.relay.queueEvents}"
    "--relay.queueBytes=${toString cfg.relay.queueBytes}"
    "--relay.batchInterval=${cfg.relay.batchInterval}"
    "--log.format=${cfg.logFormat}"
    "--log.level=${cfg.logLevel}"
    "--auth.subscribe=${lib.boolToString cfg.auth.subscribe}"
  ]
  ++ optionals (cfg.auth.publish != null) [ "--auth.publish=${lib.boolToString cfg.auth.publish}" ]
  ++ optionals (cfg.hosts != [ ]) [ "--gossip.hosts=${lib.concatStringsSep "," cfg.hosts}" ]
  ++ optionals (cfg.advertiseAddress != null) [ "--gossip.advertise=${cfg.advertiseAddress}" ]
  ++ optionals (cfg.nodeId != null) [ "--gossip.nodeId=${cfg.nodeId}" ]
  ++ cfg.extraArgs;

  # systemd hands the secret file to the unit as a credential (readable by the dynamic
  # user only, for the lifetime of the service); it is read here, at every start.
  # `$(< file)` drops trailing newlines, so a secret written with `echo` works.
  start = pkgs.writeShellScript "sse-cluster-start" ''
    set -euo pipefail
    ${lib.optionalString (cfg.secretKeyFile != null) ''
      GOSSIP_SECRET_KEY="$(< "$CREDENTIALS_DIRECTORY/gossip-secret-key")"
      export GOSSIP_SECRET_KEY
    ''}
    ${lib.optionalString (cfg.auth.jwtSecretFile != null) ''
      AUTH_JWT_SECRET="$(< "$CREDENTIALS_DIRECTORY/auth-jwt-secret")"
      export AUTH_JWT_SECRET
    ''}
    ${lib.optionalString (cfg.auth.jwtPublicKeyFile != null) ''
      AUTH_JWT_PUBLIC_KEY_FILE="$CREDENTIALS_DIRECTORY/auth-jwt-public-key"
      export AUTH_JWT_PUBLIC_KEY_FILE
    ''}
    exec ${lib.getExe' cfg.package "sse-cluster"} ${lib.escapeShellArgs args}
  '';
in
{
  options.services.sse-cluster = {
    enable = mkEnableOption "sse-cluster, a clustered Server-Sent Events broker";

    package = mkPackageOption pkgs "sse-cluster" { };

    address = mkOption {
      type = types.str;
      default = "0.0.0.0";
      example = "::";
      description = "Address the HTTP server binds to (`--http.server.address`).";
    };

    port = mkOption {
      type = types.port;
      default = 8080;
      description = ''
        TCP port of the HTTP API (`--http.server.port`). Nodes also reach each other
        here, so every node must be able to connect to it.
      '';
    };

    gossipPort = mkOption {
      type = types.port;
      default = 42000;
      description = "UDP port for gossip between nodes (`--gossip.port`).";
    };

    hosts = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "sse1.example.org:42000"
        "sse2.example.org:42000"
      ];
      description = ''
        Gossip addresses (`host:port`) of nodes to join through (`--gossip.hosts`).
        Any one live member is enough; listing every node, this one included, lets
        all hosts share the same value.
      '';
    };

    secretKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/sse-cluster";
      description = ''
        File holding the shared secret that encrypts and authenticates cluster
        traffic (the binary's `--gossip.secretKey`, passed as `GOSSIP_SECRET_KEY`).
        It is read when the service starts, through systemd's `LoadCredential`, and
        never copied into the Nix store: give an absolute path as a string, for
        example one managed by agenix or sops-nix. Without it cluster traffic is
        unauthenticated.
      '';
    };

    auth = {
      jwtSecretFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/sse-cluster-jwt";
        description = ''
          File holding the shared secret of HS256 tokens (the binary's
          `--auth.jwtSecret`, passed as `AUTH_JWT_SECRET`). Read when the service
          starts, through systemd's `LoadCredential`, and never copied into the Nix
          store: give an absolute path as a string. A key turns authorization on.
        '';
      };
      jwtPublicKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/sse-cluster/jwt-public.pem";
        description = ''
          PEM public key for RS256 or ES256 tokens (`--auth.jwtPublicKeyFile`), handed
          to the service through `LoadCredential` and read at start. A key turns
          authorization on.
        '';
      };
      publish = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = ''
          Whether publishing needs a token (`--auth.publish`); `null` leaves the
          binary's default: on when a key is set.
        '';
      };
      subscribe = mkOption {
        type = types.bool;
        default = false;
        description = "Whether subscribing needs a token (`--auth.subscribe`); needs a key.";
      };
    };

    cors.enable = mkEnableOption "CORS headers and preflight answers on every route (`--http.server.cors.enabled`)";

    ui.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Serve the page at `GET /` to watch the cluster and try publishing and subscribing (`--ui.enabled`); it uses only the public API and is safe to turn off.";
    };

    advertiseAddress = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10.0.0.5";
      description = ''
        Address other nodes use to reach this one (`--gossip.advertise`). Set it on
        hosts with several interfaces, where the address the node would pick is not
        the one its peers can reach. `null` lets the binary choose.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the HTTP port (TCP: clients, and relay between nodes) and the gossip
        port (UDP) in the firewall.
      '';
    };

    clientTimeout =
      durationOption "10s" "Time limit for requests this node makes to other nodes (`--http.client.timeout`).";

    keepAlive =
      durationOption "15s" "Interval between keep-alive comments on idle streams (`--http.server.keepAlive`).";

    retry =
      durationOption "3s" "Reconnection delay sent to clients in the stream's `retry:` line (`--http.server.retry`).";

    writeTimeout =
      durationOption "30s" "Close a connection whose writes make no progress, or whose sent data or keep-alive probes stay unacknowledged (the client vanished), for this long (`--http.server.writeTimeout`).";

    drainTimeout =
      durationOption "10s" "On stop (SIGTERM), how long the node waits for its live peers to pull every event it accepted before it leaves anyway (`--shutdown.drainTimeout`); keep it below the unit's stop timeout.";

    readyTimeout =
      durationOption "30s" "With hosts, the node reports ready once it has seen a live peer, or after this long without one (`--gossip.readyTimeout`).";

    headerTimeout =
      durationOption "10s" "Time a client has to send its whole request head (`--http.server.headerTimeout`).";

    bodyTimeout =
      durationOption "10s" "Time a client has to send its whole request body after the head; later it gets 408 and the connection is closed (`--http.server.bodyTimeout`).";

    maxHeaderBytes = mkOption {
      type = types.ints.positive;
      default = 16384;
      description = "Largest request head in bytes; larger gets 431 (`--http.server.maxHeaderBytes`).";
    };

    maxBodyBytes = mkOption {
      type = types.ints.positive;
      default = 65536;
      description = "Largest accepted publish body in bytes (`--http.server.maxBodyBytes`).";
    };

    maxBulkBytes = mkOption {
      type = types.ints.positive;
      default = 1048576;
      description = ''
        Largest accepted bulk publish body (`application/x-ndjson`, one event a line)
        in bytes (`--http.server.maxBulkBytes`). At most half of `relay.queueBytes`.
      '';
    };

    maxConnections = mkOption {
      type = types.ints.positive;
      default = 10000;
      description = ''
        Open connections above which new requests get 503
        (`--http.server.maxConnections`). The unit's file descriptor limit follows it.
      '';
    };

    maxConnectionsPerAddress = mkOption {
      type = types.ints.positive;
      default = 1000;
      description = ''
        Open connections from one client IP address above which new ones are answered
        429 and closed (`--http.server.maxConnectionsPerAddress`). Behind a reverse
        proxy or load balancer every connection comes from the proxy: set it to
        `maxConnections` there.
      '';
    };

    replay = {
      events = mkOption {
        type = types.ints.positive;
        default = 1000;
        description = "Events kept per channel for `Last-Event-ID` resume (`--replay.events`).";
      };
      age = durationOption "5m" "How long events stay in the replay history (`--replay.age`).";
      maxBytes = mkOption {
        type = types.ints.positive;
        default = 268435456;
        description = ''
          Bytes of replay history on this node, all channels together
          (`--replay.maxBytes`); past it the oldest events are evicted first, whatever
          their channel. At least `maxBodyBytes`.
        '';
      };
    };

    channels.max = mkOption {
      type = types.ints.positive;
      default = 100000;
      description = ''
        Channels this node keeps, with subscribers or only their history
        (`--channels.max`); past it the quietest channel without subscribers is
        dropped, and when every channel has subscribers a new one gets 503.
      '';
    };

    relay = {
      queueEvents = mkOption {
        type = types.ints.positive;
        default = 10000;
        description = ''
          Accepted events kept for a peer that is unreachable (`--relay.queueEvents`);
          past this bound the peer's subscribers get an `event: gap`.
        '';
      };
      queueBytes = mkOption {
        type = types.ints.positive;
        default = 33554432;
        description = "Bytes of accepted events kept for an unreachable peer (`--relay.queueBytes`).";
      };
      batchInterval = durationOption "2ms" ''
        Shortest time between two writes of events to one peer (`--relay.batchInterval`):
        events accepted meanwhile leave together; a quiet stream writes at once. `0s`
        sends each event at once; at most `1s`.
      '';
    };

    nodeId = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "broker-1";
      description = ''
        This node's unique name in the cluster (`--gossip.nodeId`); by default
        `<hostname>@<advertise address>:<port>`.
      '';
    };

    subscriberBuffer = mkOption {
      type = types.ints.positive;
      default = 512;
      description = ''
        Events a subscriber may fall behind before it is disconnected
        (`--subscriber.buffer`); at most `replay.events`.
      '';
    };

    subscriberMaxChannels = mkOption {
      type = types.ints.positive;
      default = 32;
      description = ''
        Most channels one stream may follow, as in `GET /channel/news,sport`
        (`--subscriber.maxChannels`); more is answered `400`.
      '';
    };

    logLevel = mkOption {
      type = types.str;
      default = "info";
      example = "sse_cluster=debug,info";
      description = "Log level or filter (`--log.level`).";
    };

    logFormat = mkOption {
      type = types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = "Log format (`--log.format`).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Further arguments appended to `sse-cluster start`.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.subscriberBuffer <= cfg.replay.events;
        message = "services.sse-cluster.subscriberBuffer must not exceed services.sse-cluster.replay.events.";
      }
      {
        assertion = cfg.replay.maxBytes >= cfg.maxBodyBytes;
        message = "services.sse-cluster.replay.maxBytes must be at least services.sse-cluster.maxBodyBytes.";
      }
      {
        assertion = cfg.maxBulkBytes * 2 <= cfg.relay.queueBytes;
        message = "services.sse-cluster.maxBulkBytes must be at most half of services.sse-cluster.relay.queueBytes.";
      }
      {
        assertion =
          cfg.secretKeyFile == null
          || (lib.hasPrefix "/" cfg.secretKeyFile && !lib.hasPrefix builtins.storeDir cfg.secretKeyFile);
        message = "services.sse-cluster.secretKeyFile must be an absolute path outside the Nix store.";
      }
      {
        assertion =
          cfg.auth.jwtSecretFile == null
          || (
            lib.hasPrefix "/" cfg.auth.jwtSecretFile && !lib.hasPrefix builtins.storeDir cfg.auth.jwtSecretFile
          );
        message = "services.sse-cluster.auth.jwtSecretFile must be an absolute path outside the Nix store.";
      }
      {
        assertion = cfg.auth.jwtPublicKeyFile == null || lib.hasPrefix "/" cfg.auth.jwtPublicKeyFile;
        message = "services.sse-cluster.auth.jwtPublicKeyFile must be an absolute path.";
      }
      {
        assertion =
          (cfg.auth.subscribe || cfg.auth.publish == true)
          -> (cfg.auth.jwtSecretFile != null || cfg.auth.jwtPublicKeyFile != null);
        message = "services.sse-cluster.auth.publish and auth.subscribe need auth.jwtSecretFile or auth.jwtPublicKeyFile.";
      }
    ];

    networking.firewall = mkIf cfg.openFirewall {
      allowedTCPPorts = [ cfg.port ];
      allowedUDPPorts = [ cfg.gossipPort ];
    };

    systemd.services.sse-cluster = {
      description = "sse-cluster Server-Sent Events broker";
      documentation = [ "https://github.com/sse-cluster/sse-cluster" ];
      wantedBy = [ "multi-user.target" ];
      # Seed hosts are resolved at start.
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      serviceConfig = {
        ExecStart = start;
        Restart = "on-failure";
        RestartSec = "2s";
        # SIGTERM makes the node drain (at most drainTimeout), end open streams and
        # exit 0: keep TimeoutStopSec above drainTimeout plus a few seconds.
        KillSignal = "SIGTERM";
        TimeoutStopSec = "30s";

        DynamicUser = true;
        LoadCredential =
          optionals (cfg.secretKeyFile != null) [ "gossip-secret-key:${cfg.secretKeyFile}" ]
          ++ optionals (cfg.auth.jwtSecretFile != null) [ "auth-jwt-secret:${cfg.auth.jwtSecretFile}" ]
          ++ optionals (cfg.auth.jwtPublicKeyFile != null) [
            "auth-jwt-public-key:${cfg.auth.jwtPublicKeyFile}"
          ];

        # One descriptor per subscriber: leave room above maxConnections for peers,
        # gossip and the listener.
        LimitNOFILE = lib.max 65536 (cfg.maxConnections + 1024);

        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        AmbientCapabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        NoNewPrivileges = true;
        # A user namespace would drop the capability a low port needs.
        PrivateUsers = !privilegedPort;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        # No ProcSubset=pid: the node reads its name from /proc/sys/kernel/hostname.
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        SystemCallErrorNumber = "EPERM";
        UMask = "0077";
      };
    };
  };

  meta.maintainers = [ ];
}
