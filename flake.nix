{
  description = "sse-cluster: a clustered Server-Sent Events broker";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      linux = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      darwin = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forSystems = systems: f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      version = (lib.importTOML ./Cargo.toml).package.version;

      # The Cargo workspace without local build output, the flake, its helpers and CI
      # scripts, so editing those does not rebuild the package. The NixOS module and
      # the Kubernetes manifests stay: tests read them.
      src = lib.cleanSourceWith {
        src = lib.cleanSource ./.;
        filter =
          path: _type:
          !(builtins.elem (baseNameOf path) [
            "target"
            "flake.nix"
            "flake.lock"
            "nix"
            ".ci"
          ]);
      };

      # Dependencies come from Cargo.lock through nixpkgs' vendoring: no network at
      # build time, and no hash to update when Cargo.lock changes.
      cargoLock.lockFile = ./Cargo.lock;

      package =
        pkgs:
        pkgs.rustPlatform.buildRustPackage {
          pname = "sse-cluster";
          inherit version src cargoLock;

          # The workspace's default member is the broker; its tests and the
          # simulation crate's both run in the check phase. The tests that read
          # /proc are Linux-only (cfg), so the phase can pass on Darwin too (not
          # run there yet). On Linux, `.ci/sandbox-check` runs these tests the way
          # this phase does.
          cargoTestFlags = [ "--workspace" ];

          meta = {
            description = "Clustered Server-Sent Events broker";
            homepage = "https://github.com/sse-cluster/sse-cluster";
            license = lib.licenses.mit;
            mainProgram = "sse-cluster";
            platforms = linux ++ darwin;
          };
        };

      # A cargo command over the vendored workspace, as a check whose output is a stamp.
      cargoCheck =
        pkgs: name: nativeBuildInputs: command:
        pkgs.rustPlatform.buildRustPackage {
          pname = "sse-cluster-${name}";
          inherit version src cargoLock nativeBuildInputs;
          # cargo-auditable wraps `cargo build` only; a check runs other commands.
          auditable = false;
          buildPhase = ''
            runHook preBuild
            ${command}
            runHook postBuild
          '';
          doCheck = false;
          installPhase = "touch $out";
        };

      # nginx with nchan, the reference broker of the benchmarks, if this nixpkgs
      # has the module. nixpkgs (nixos-25.11 included) does not package nchan, so
      # the dev shell has plain nginx: bench/compare.sh needs nginx built with nchan
      # from elsewhere (Debian's libnginx-mod-nchan) to compare against it.
      nginxForBenchmarks =
        pkgs:
        if pkgs.nginxModules ? nchan then
          pkgs.nginx.override { modules = [ pkgs.nginxModules.nchan ]; }
        else
          pkgs.nginx;
    in
    {
      packages = forSystems (linux ++ darwin) (
        pkgs:
        let
          sse-cluster = package pkgs;
        in
        {
          default = sse-cluster;
        }
        // lib.optionalAttrs pkgs.stdenv.isLinux {
          # `docker load < result`; `docker run sse-cluster:<version>` starts a node,
          # `docker run sse-cluster:<version> start --flags...` one with flags.
          dockerImage = pkgs.dockerTools.buildLayeredImage {
            name = "sse-cluster";
            tag = version;
            contents = [ pkgs.cacert ];
            config = import ./nix/container-config.nix { exe = lib.getExe sse-cluster; };
          };
        }
      );

      apps = forSystems (linux ++ darwin) (pkgs: {
        default = {
          type = "app";
          program = toString (
            pkgs.writeShellScript "sse-cluster-start" ''
              exec ${lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default} start "$@"
            ''
          );
          meta.description = "Start an sse-cluster node (HTTP on 8080, gossip on 42000)";
        };
      });

      overlays.default = final: _prev: { sse-cluster = package final; };

      # The module, with the package of this flake as its default.
      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.sse-cluster.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      devShells = forSystems (linux ++ darwin) (pkgs: {
        default = pkgs.mkShell {
          packages =
            [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.cargo-nextest
              pkgs.curl
              (nginxForBenchmarks pkgs)
            ]
            # The browser test drives Chromium through chromedriver, where nixpkgs
            # builds them for this platform.
            ++ lib.filter (lib.meta.availableOn pkgs.stdenv.hostPlatform) [
              pkgs.chromium
              pkgs.chromedriver
            ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      checks = forSystems linux (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;

        fmt = pkgs.runCommand "sse-cluster-fmt" { nativeBuildInputs = [ pkgs.rustfmt ]; } ''
          cd ${src}
          find . -name '*.rs' -print0 | xargs -0 rustfmt --check --edition 2021
          touch $out
        '';

        clippy =
          cargoCheck pkgs "clippy" [ pkgs.clippy ]
            "cargo clippy --workspace --all-targets --offline -- -D warnings";

        cluster = import ./nixos-module/test.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
      });
    };
}
