#include "ps/service/ps_service.h"

#include "common/incarnation.h"

namespace plexus::ps {

PsService::PsService(int shard)
    : shard_(shard), incarnation_(NewIncarnationId()) {}

}  // namespace plexus::ps
