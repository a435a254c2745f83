// delay_relay: a TCP relay that delays every byte it forwards by a fixed
// time, for the multi-host rehearsal on kernels without sch_netem (see
// tests/deploy/multihost_test.cc). It runs on a host of its own; iptables
// DNAT rules in the other hosts send their connections for a daemon's
// address to the relay's port for that daemon, and the relay forwards each
// byte stream to the daemon's real address. Every chunk read from either
// side is held until `delay_ms` after it was read, then written to the other
// side: each direction of each connection has its own queue of (due time,
// bytes), all served by one epoll loop whose timeout is the earliest due
// time, so the two directions never wait on each other and a round trip
// through the relay takes at least 2 * delay_ms.
//
//   delay_relay --delay_ms=20 --ready_file=PATH PORT=HOST:PORT ...
//
// Listens on 0.0.0.0:PORT for each mapping (HOST: a dotted IPv4 address).
// Writes the first PORT to --ready_file (atomically) once every listener is
// bound. Logs one line per connection to stderr when it opens ("connection
// N from PEER to TARGET") and when it ends, with the bytes carried each way.
// A half-close is forwarded (after the delay) as a half-close; a reset or a
// failed connection to the target closes both sides. Runs until killed.
//
// Plain POSIX, no other dependencies.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace {

// A direction stops reading while this much waits in its queue.
constexpr size_t kMaxQueued = 4 << 20;
constexpr size_t kReadSize = 64 << 10;
// A socket's interest set once it is out of the epoll set.
constexpr uint32_t kRemoved = ~uint32_t{0};

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void Die(const std::string& what) {
  fprintf(stderr, "delay_relay: %s: %s\n", what.c_str(), strerror(errno));
  exit(1);
}

void SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    Die("fcntl");
  }
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string Format(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

struct Mapping {
  int listen_port = 0;
  sockaddr_in target = {};
  int fd = -1;
};

struct Chunk {
  int64_t due_ns;
  std::string data;  // empty: the end of the stream (forward a half-close)
  size_t offset = 0;
};

// One direction of a connection: what was read from `from`, to be written to
// `to` once due.
struct Direction {
  int from = -1;
  int to = -1;
  std::deque<Chunk> queue;
  size_t queued = 0;      // bytes in `queue`
  bool read_eof = false;  // `from` ended; the end is queued
  bool done = false;      // the end was forwarded (shutdown of `to`)
  bool blocked = false;   // `to` would block: wait for EPOLLOUT
  uint64_t bytes = 0;     // forwarded so far
};

struct Connection;

// What an epoll event points at: a listener (conn == nullptr) or one of a
// connection's two sockets.
struct Handle {
  Connection* conn = nullptr;
  const Mapping* mapping = nullptr;
  int fd = -1;
};

struct Connection {
  int id = 0;
  std::string name;  // "PEER to TARGET"
  int client = -1;
  int upstream = -1;
  bool connected = false;  // the connection to the target is established
  bool dead = false;
  Direction up;    // client -> target
  Direction down;  // target -> client
  Handle client_handle;
  Handle upstream_handle;
  uint32_t client_events = 0;
  uint32_t upstream_events = 0;
};

class Relay {
 public:
  explicit Relay(int64_t delay_ns) : delay_ns_(delay_ns) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) Die("epoll_create1");
  }

  void Listen(Mapping* m) {
    m->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m->fd < 0) Die("socket");
    int one = 1;
    setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(static_cast<uint16_t>(m->listen_port));
    if (bind(m->fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) {
      Die("bind port " + std::to_string(m->listen_port));
    }
    if (listen(m->fd, 128) < 0) Die("listen");
    SetNonBlocking(m->fd);
    auto h = std::make_unique<Handle>();
    h->mapping = m;
    h->fd = m->fd;
    epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.ptr = h.get();
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, m->fd, &ev) < 0) Die("epoll_ctl");
    listeners_.push_back(std::move(h));
  }

  [[noreturn]] void Run() {
    std::vector<epoll_event> events(64);
    while (true) {
      int n = epoll_wait(epoll_, events.data(), events.size(), TimeoutMs());
      if (n < 0 && errno != EINTR) Die("epoll_wait");
      for (int i = 0; i < n; ++i) {
        Handle* h = static_cast<Handle*>(events[i].data.ptr);
        if (h->conn == nullptr) {
          Accept(*h->mapping);
        } else if (!h->conn->dead) {
          OnEvent(h->conn, h->fd, events[i].events);
        }
      }
      // Everything that has come due, on every connection.
      const int64_t now = NowNs();
      for (auto& c : conns_) {
        if (c->dead || !c->connected) continue;
        Flush(c.get(), &c->up, now);
        if (!c->dead) Flush(c.get(), &c->down, now);
        if (!c->dead) UpdateInterest(c.get());
      }
      Reap();
    }
  }

 private:
  // Until the earliest chunk that can be written is due (-1: none waits).
  int TimeoutMs() const {
    int64_t earliest = -1;
    for (const auto& c : conns_) {
      if (c->dead || !c->connected) continue;
      for (const Direction* d : {&c->up, &c->down}) {
        if (d->queue.empty() || d->blocked) continue;
        int64_t due = d->queue.front().due_ns;
        if (earliest < 0 || due < earliest) earliest = due;
      }
    }
    if (earliest < 0) return -1;
    int64_t wait = earliest - NowNs();
    if (wait <= 0) return 0;
    return static_cast<int>((wait + 999999) / 1000000);  // never early
  }

  void Accept(const Mapping& m) {
    while (true) {
      sockaddr_in peer = {};
      socklen_t len = sizeof(peer);
      int fd = accept4(m.fd, reinterpret_cast<sockaddr*>(&peer), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        if (errno == ECONNABORTED) continue;
        fprintf(stderr, "delay_relay: accept: %s\n", strerror(errno));
        return;
      }
      SetNoDelay(fd);
      auto c = std::make_unique<Connection>();
      c->id = ++next_id_;
      c->name = Format(peer) + " to " + Format(m.target);
      c->client = fd;
      c->upstream =
          socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c->upstream < 0) Die("socket");
      SetNoDelay(c->upstream);
      fprintf(stderr, "delay_relay: connection %d from %s\n", c->id,
              c->name.c_str());
      int rc =
          connect(c->upstream, reinterpret_cast<const sockaddr*>(&m.target),
                  sizeof(m.target));
      if (rc < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "delay_relay: connection %d: connect: %s\n", c->id,
                strerror(errno));
        linger l = {1, 0};
        setsockopt(c->client, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(c->upstream);
        close(c->client);
        continue;
      }
      c->connected = rc == 0;
      c->up.from = c->client;
      c->up.to = c->upstream;
      c->down.from = c->upstream;
      c->down.to = c->client;
      c->client_handle = {c.get(), nullptr, c->client};
      c->upstream_handle = {c.get(), nullptr, c->upstream};
      Register(c->client, &c->client_handle);
      Register(c->upstream, &c->upstream_handle);
      UpdateInterest(c.get());
      conns_.push_back(std::move(c));
    }
  }

  void Register(int fd, Handle* h) {
    epoll_event ev = {};
    ev.events = 0;
    ev.data.ptr = h;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) < 0) Die("epoll_ctl add");
  }

  void OnEvent(Connection* c, int fd, uint32_t events) {
    if (fd == c->upstream && !c->connected) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        fprintf(stderr, "delay_relay: connection %d: connect: %s\n", c->id,
                strerror(err));
        Kill(c, /*reset=*/true);
        return;
      }
      if (!(events & (EPOLLOUT | EPOLLIN))) return;
      c->connected = true;
    }
    if (events & EPOLLOUT) {
      if (fd == c->up.to) c->up.blocked = false;
      if (fd == c->down.to) c->down.blocked = false;
    }
    Direction* reads = fd == c->client ? &c->up : &c->down;
    if ((events & (EPOLLHUP | EPOLLERR)) && reads->read_eof) {
      // Nothing more to read, and epoll reports these whether asked or not.
      // A hang-up with our side still sending is a closed connection (the
      // peer reset it); with our side done too, the socket has no work left.
      const Direction* writes = fd == c->client ? &c->down : &c->up;
      if (!writes->done || (events & EPOLLERR)) {
        Kill(c, /*reset=*/true);
      } else {
        epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
        (fd == c->client ? c->client_events : c->upstream_events) = kRemoved;
      }
      return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) Read(c, reads);
  }

  // Reads what `d.from` has, stamped with its due time.
  void Read(Connection* c, Direction* d) {
    if (d->read_eof) return;
    const int64_t due = NowNs() + delay_ns_;
    static char buf[kReadSize];
    while (d->queued < kMaxQueued) {
      ssize_t n = recv(d->from, buf, sizeof(buf), 0);
      if (n > 0) {
        d->queued += n;
        d->queue.push_back(Chunk{due, std::string(buf, n)});
        continue;
      }
      if (n == 0) {
        d->read_eof = true;
        d->queue.push_back(Chunk{due, std::string()});
        return;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      fprintf(stderr, "delay_relay: connection %d: read: %s\n", c->id,
              strerror(errno));
      Kill(c, /*reset=*/true);
      return;
    }
  }

  // Writes the chunks of `d` that are due.
  void Flush(Connection* c, Direction* d, int64_t now) {
    while (!d->blocked && !d->queue.empty() && d->queue.front().due_ns <= now) {
      Chunk& chunk = d->queue.front();
      if (chunk.data.empty()) {
        shutdown(d->to, SHUT_WR);
        d->done = true;
        d->queue.pop_front();
        if (c->up.done && c->down.done) Kill(c, /*reset=*/false);
        return;
      }
      ssize_t n = send(d->to, chunk.data.data() + chunk.offset,
                       chunk.data.size() - chunk.offset, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          d->blocked = true;
          return;
        }
        if (errno == EINTR) continue;
        fprintf(stderr, "delay_relay: connection %d: write: %s\n", c->id,
                strerror(errno));
        Kill(c, /*reset=*/true);
        return;
      }
      chunk.offset += n;
      d->bytes += n;
      d->queued -= n;
      if (chunk.offset == chunk.data.size()) d->queue.pop_front();
    }
  }

  // Reads while the queue has room and the target is connected; waits for
  // writability while a write would block (or the connect is pending).
  void UpdateInterest(Connection* c) {
    auto want = [&](int fd, uint32_t* current) {
      uint32_t ev = 0;
      const Direction& reads = fd == c->client ? c->up : c->down;
      const Direction& writes = fd == c->client ? c->down : c->up;
      if (c->connected && !reads.read_eof && reads.queued < kMaxQueued) {
        ev |= EPOLLIN;
      }
      if (writes.blocked || (fd == c->upstream && !c->connected)) {
        ev |= EPOLLOUT;
      }
      if (ev == *current || *current == kRemoved) return;
      epoll_event e = {};
      e.events = ev;
      e.data.ptr = fd == c->client ? &c->client_handle : &c->upstream_handle;
      if (epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &e) < 0) Die("epoll_ctl mod");
      *current = ev;
    };
    want(c->client, &c->client_events);
    want(c->upstream, &c->upstream_events);
  }

  // Ends both sides: `reset` (an error on either) sends the other side a
  // reset, as a broken path would, rather than an orderly end of stream.
  void Kill(Connection* c, bool reset) {
    if (c->dead) return;
    c->dead = true;
    if (reset) {
      linger l = {1, 0};
      setsockopt(c->client, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      setsockopt(c->upstream, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    fprintf(stderr,
            "delay_relay: connection %d from %s ended: %llu bytes there, "
            "%llu back\n",
            c->id, c->name.c_str(),
            static_cast<unsigned long long>(c->up.bytes),
            static_cast<unsigned long long>(c->down.bytes));
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c->client, nullptr);
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c->upstream, nullptr);
    close(c->client);
    close(c->upstream);
  }

  // Frees the connections that ended (after the event batch that may still
  // name them).
  void Reap() {
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [](const std::unique_ptr<Connection>& c) {
                                  return c->dead;
                                }),
                 conns_.end());
  }

  const int64_t delay_ns_;
  int epoll_ = -1;
  int next_id_ = 0;
  std::vector<std::unique_ptr<Handle>> listeners_;
  std::vector<std::unique_ptr<Connection>> conns_;
};

[[noreturn]] void Usage() {
  fprintf(stderr,
          "usage: delay_relay --delay_ms=MS [--ready_file=PATH] "
          "PORT=IPV4:PORT ...\n");
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  long delay_ms = -1;
  std::string ready_file;
  std::vector<Mapping> mappings;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--delay_ms=", 0) == 0) {
      char* end = nullptr;
      delay_ms = strtol(arg.c_str() + 11, &end, 10);
      if (*end != '\0' || delay_ms < 0) Usage();
    } else if (arg.rfind("--ready_file=", 0) == 0) {
      ready_file = arg.substr(13);
    } else {
      size_t eq = arg.find('='), colon = arg.rfind(':');
      if (eq == std::string::npos || colon == std::string::npos || colon < eq) {
        Usage();
      }
      Mapping m;
      m.listen_port = atoi(arg.substr(0, eq).c_str());
      m.target.sin_family = AF_INET;
      m.target.sin_port =
          htons(static_cast<uint16_t>(atoi(arg.substr(colon + 1).c_str())));
      if (m.listen_port <= 0 || m.listen_port > 65535 ||
          inet_pton(AF_INET, arg.substr(eq + 1, colon - eq - 1).c_str(),
                    &m.target.sin_addr) != 1) {
        Usage();
      }
      mappings.push_back(m);
    }
  }
  if (delay_ms < 0 || mappings.empty()) Usage();

  Relay relay(delay_ms * 1000000);
  std::string summary;
  for (Mapping& m : mappings) {
    relay.Listen(&m);
    summary += " " + std::to_string(m.listen_port) + "->" + Format(m.target);
  }
  fprintf(stderr, "delay_relay: %ld ms each way:%s\n", delay_ms,
          summary.c_str());
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    if (f == nullptr) Die("open " + tmp);
    fprintf(f, "%d\n", mappings.front().listen_port);
    if (fclose(f) != 0 || rename(tmp.c_str(), ready_file.c_str()) != 0) {
      Die("write " + ready_file);
    }
  }
  relay.Run();
}
