#include "common/incarnation.h"

#include <random>

namespace plexus {

uint64_t NewIncarnationId() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t{rd()} << 32) | rd();
  return id;
}

}  // namespace plexus
