#!/usr/bin/env bash
# The link rules (cmake/PlexusHelpers.cmake FORBID) stop a module from linking
# gRPC or the wire types; this stops it from including their headers, which
# are on the system include path and would otherwise compile.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
status=0
# Folders that hold logic only: no gRPC, no generated wire types.
for dir in common ps/storage collectives/patterns collectives/algorithms \
           collectives/rendezvous coordinator/membership coordinator/health \
           coordinator/scheduling coordinator/checkpointing coordinator/rendezvous \
           coordinator/state; do
  [ -d "$root/$dir" ] || continue
  while IFS= read -r hit; do
    case "$hit" in
      # The gRPC and wire-type edge of common/ (plexus::common_grpc).
      "$root/common/admin_http."*|"$root/common/data_frame."*|"$root/common/auth."*|"$root/common/tls."*|"$root/common/error_info."*|"$root/common/failpoint_rpc."*|"$root/common/shard_map."*|"$root/common/grpc_status."*|"$root/common/daemon"*|"$root/common/health_"*) continue ;;
    esac
    echo "include rule broken: $hit"
    status=1
  done < <(grep -rnE '#include [<"](grpc|grpcpp|plexus/v1/)' "$root/$dir" \
             --include='*.h' --include='*.cc' 2>/dev/null)
done
# Algorithms see only the transport interface, never an implementation.
while IFS= read -r hit; do
  echo "include rule broken (algorithms include a transport implementation): $hit"
  status=1
done < <(grep -rnE '#include "collectives/transport/(ucx|nccl)/' \
           "$root/collectives/algorithms" "$root/collectives/patterns" 2>/dev/null)
[ "$status" = 0 ] && echo "include rules hold"
exit "$status"
