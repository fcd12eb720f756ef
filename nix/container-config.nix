# The container image's configuration (flake.nix passes it to dockerTools). Kept apart
# so .ci/nix-check can evaluate it without nixpkgs.
#
# The binary is the entrypoint and `start` the default command, as in the Go image:
#   docker run IMAGE                          → sse-cluster start
#   docker run IMAGE start --gossip.hosts=…   → sse-cluster start --gossip.hosts=…
#   docker run IMAGE bench …                  → sse-cluster bench …
# Kubernetes `args:` replace the command the same way (deploy/kubernetes).
{ exe }:
{
  Entrypoint = [ exe ];
  Cmd = [ "start" ];
  ExposedPorts = {
    "8080/tcp" = { };
    "42000/udp" = { };
  };
  # nobody: the image holds no writable state, so no user of its own is needed.
  User = "65534:65534";
}
