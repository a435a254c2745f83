#include "coordinator/service/coordinator_service.h"

namespace plexus::coordinator {

// The epoch is persisted in the coordinator's RocksDB once state is kept
// there; until then every start is epoch 1.
CoordinatorService::CoordinatorService() : epoch_(1) {}

}  // namespace plexus::coordinator
