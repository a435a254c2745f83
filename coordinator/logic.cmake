# The coordinator's logic modules: pure state machines driven by an injected
# Clock, no gRPC and no wire types (coordinator/service translates).

plexus_cc_library(NAME coordinator_membership
  SRCS membership/json.cc membership/cluster_spec.cc membership/membership.cc
       membership/names.cc
  DEPS plexus::common absl::status absl::statusor absl::strings
       absl::synchronization absl::time
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)

plexus_cc_library(NAME coordinator_health
  SRCS health/failure_detector.cc
  DEPS plexus::coordinator_membership plexus::common absl::status absl::statusor absl::strings
       absl::synchronization absl::time glog::glog
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)

plexus_cc_library(NAME coordinator_scheduling
  SRCS scheduling/scheduler.cc
  DEPS plexus::coordinator_membership plexus::common absl::status
       absl::statusor absl::strings absl::synchronization absl::time
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)

plexus_cc_library(NAME coordinator_rendezvous
  SRCS rendezvous/rendezvous.cc
  DEPS plexus::coordinator_membership plexus::common absl::status
       absl::statusor absl::strings absl::synchronization absl::time
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)

plexus_cc_library(NAME coordinator_state
  SRCS state/codec.cc state/state_store.cc
  DEPS plexus::coordinator_membership plexus::coordinator_scheduling
       plexus::common absl::status absl::statusor absl::strings
       absl::synchronization absl::time RocksDB::rocksdb-shared
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)

plexus_cc_library(NAME coordinator_checkpointing
  SRCS checkpointing/checkpointer.cc
  DEPS plexus::coordinator_scheduling plexus::common absl::status
       absl::statusor absl::strings absl::synchronization absl::time
       glog::glog
  FORBID gRPC::grpc++ gRPC::grpc plexus_proto)
