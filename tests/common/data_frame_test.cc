// The direct data plane's framing (common/data_frame.h) over a real
// socket pair: frames written back to back, one byte at a time, larger and
// smaller than the reader's buffer, and streams that end early.
#include "common/data_frame.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/types/span.h"

namespace plexus {
namespace {

class DataFrameTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0);
  }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
  }
  int writer() const { return fds_[0]; }
  int reader() const { return fds_[1]; }

  static absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

  // A push of one sparse update whose gradient bytes are `bytes` of a
  // pattern that starts at `seed`.
  static v1::PushRequest Push(size_t bytes, int seed) {
    v1::PushRequest req;
    req.set_push_seq(static_cast<uint32_t>(seed));
    v1::SparseUpdate* u = req.add_sparse();
    u->set_table("t" + std::to_string(seed));
    u->add_ids(static_cast<uint64_t>(seed));
    std::string data(bytes, '\0');
    for (size_t i = 0; i < bytes; ++i) {
      data[i] = static_cast<char>((i * 7 + static_cast<size_t>(seed)) & 0xff);
    }
    u->mutable_grads()->set_data(data);
    return req;
  }

  // Serialises frames into one string (what a peer would send).
  static std::string Frames(const std::vector<v1::PushRequest>& reqs) {
    int p[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, p), 0);
    std::string out;
    std::thread drain([&] {
      char buf[1 << 16];
      ssize_t n;
      while ((n = read(p[1], buf, sizeof(buf))) > 0) out.append(buf, n);
    });
    for (size_t i = 0; i < reqs.size(); ++i) {
      v1::DataFrameHeader h;
      h.set_request_id(i + 1);
      v1::PushRequest copy = reqs[i];
      EXPECT_TRUE(WriteDataFrame(p[0], h, &copy, Deadline()).ok());
    }
    close(p[0]);
    drain.join();
    close(p[1]);
    return out;
  }

  // A thread sending bytes to the reading end (Send). Joined when it goes
  // out of scope, after the reading end shuts down: a sender still writing
  // (a test that failed before reading everything) then stops.
  class Sender {
   public:
    Sender(int reader, std::thread thread)
        : reader_(reader), thread_(std::move(thread)) {}
    ~Sender() {
      shutdown(reader_, SHUT_RD);
      thread_.join();
    }

   private:
    const int reader_;
    std::thread thread_;
  };

  // Sends `bytes` in pieces of `piece` bytes, then ends the stream.
  std::unique_ptr<Sender> Send(std::string bytes, size_t piece) {
    const int fd = writer();
    return std::make_unique<Sender>(
        reader(), std::thread([fd, bytes = std::move(bytes), piece] {
          for (size_t at = 0; at < bytes.size();) {
            const size_t n = std::min(piece, bytes.size() - at);
            ssize_t w = send(fd, bytes.data() + at, n, MSG_NOSIGNAL);
            if (w > 0) {
              at += static_cast<size_t>(w);
            } else if (errno == EAGAIN) {
              pollfd p{fd, POLLOUT, 0};
              poll(&p, 1, -1);
            } else {
              return;  // the reading end shut down
            }
          }
          shutdown(fd, SHUT_WR);
        }));
  }

  // What reading a header says when the peer sends `bytes`, with a frame
  // limit of `max_body`.
  absl::Status ReadHeaderOf(std::string bytes, int64_t max_body) {
    auto sender = Send(std::move(bytes), 1 << 20);
    FrameReader r(reader());
    v1::DataFrameHeader h;
    uint64_t body = 0;
    return r.ReadHeader(Deadline(), max_body, &h, &body);
  }

  // Reads frames in turn and checks each against `want`.
  static void ExpectFrames(FrameReader* r,
                           const std::vector<v1::PushRequest>& want) {
    for (size_t i = 0; i < want.size(); ++i) {
      v1::DataFrameHeader h;
      uint64_t body = 0;
      ASSERT_TRUE(r->ReadHeader(Deadline(), 64 << 20, &h, &body).ok());
      EXPECT_EQ(h.request_id(), i + 1);
      v1::PushRequest got;
      ASSERT_TRUE(r->ReadBody(h, body, Deadline(), &got).ok());
      EXPECT_EQ(got.SerializeAsString(), want[i].SerializeAsString())
          << "frame " << i;
    }
  }

  // Reads the next frame, its attachments offered buffers of `sizes`
  // (ReadBody's `into`); returns those buffers' bytes, one after another.
  static std::string ReadBodyInto(FrameReader* r,
                                  const std::vector<size_t>& sizes,
                                  v1::PushRequest* got, bool* landed) {
    v1::DataFrameHeader h;
    uint64_t body = 0;
    EXPECT_TRUE(r->ReadHeader(Deadline(), 64 << 20, &h, &body).ok());
    std::vector<std::string> buffers;
    for (size_t n : sizes) buffers.emplace_back(n, '\0');
    std::vector<absl::Span<char>> into;
    for (std::string& b : buffers) into.push_back(absl::MakeSpan(b));
    EXPECT_TRUE(r->ReadBody(h, body, Deadline(), got, into, landed).ok());
    return absl::StrJoin(buffers, "");
  }

  int fds_[2] = {-1, -1};
};

TEST_F(DataFrameTest, FramesOfEverySizeBackToBackAreReadInTurn) {
  // Smaller than the reader's buffer, larger, and several in one read.
  const std::vector<v1::PushRequest> want = {
      Push(16, 1),       Push(4096, 2), Push(3 << 20, 3), Push(0, 4),
      Push(16 << 10, 5), Push(100, 6),  Push(40 << 10, 7)};
  auto sender = Send(Frames(want), 1 << 20);
  FrameReader r(reader());
  ExpectFrames(&r, want);
}

TEST_F(DataFrameTest, FramesTrickledAByteAtATimeAreReadWhole) {
  const std::vector<v1::PushRequest> want = {Push(300, 1), Push(20000, 2)};
  auto sender = Send(Frames(want), 1);
  FrameReader r(reader());
  ExpectFrames(&r, want);
}

TEST_F(DataFrameTest, AttachmentsLandInTheCallersBuffersWhenTheyFit) {
  const std::vector<v1::PushRequest> want = {Push(5000, 1), Push(70000, 2)};
  auto sender = Send(Frames(want), 1 << 20);
  FrameReader r(reader());
  for (size_t i = 0; i < want.size(); ++i) {
    const std::string& data = want[i].sparse(0).grads().data();
    bool landed = false;
    v1::PushRequest got;
    EXPECT_EQ(ReadBodyInto(&r, {data.size()}, &got, &landed), data)
        << "frame " << i;
    EXPECT_TRUE(landed);
    EXPECT_TRUE(got.sparse(0).grads().data().empty());
    EXPECT_EQ(got.sparse(0).table(), want[i].sparse(0).table());
  }
}

// Buffers that together hold an attachment exactly are filled in turn (a
// sparse pull's rows landing at their callers' positions); buffers one byte
// short are not used, and the bytes stay in the message.
TEST_F(DataFrameTest, AttachmentsFillSeveralBuffersInTurn) {
  const std::vector<v1::PushRequest> want = {Push(70000, 1), Push(5000, 2)};
  auto sender = Send(Frames(want), 4096);
  FrameReader r(reader());
  for (size_t i = 0; i < want.size(); ++i) {
    const std::string& data = want[i].sparse(0).grads().data();
    const size_t a = 7, b = data.size() / 3, c = data.size() - a - b;
    const size_t short_by = i == 1 ? 1 : 0;
    bool landed = !short_by;
    v1::PushRequest got;
    const std::string into =
        ReadBodyInto(&r, {a, b, c - short_by}, &got, &landed);
    EXPECT_EQ(landed, !short_by) << "frame " << i;
    if (!short_by) {
      EXPECT_EQ(into, data) << "frame " << i;
      EXPECT_TRUE(got.sparse(0).grads().data().empty());
    } else {
      EXPECT_EQ(into, std::string(data.size() - 1, '\0'));
      EXPECT_EQ(got.sparse(0).grads().data(), data);
    }
  }
}

TEST_F(DataFrameTest, AnEndBeforeAFrameIsACleanCloseAndInsideOneIsNot) {
  const std::string frame = Frames({Push(1000, 1)});
  // One whole frame, then half of the next, then the end of the stream.
  auto sender = Send(frame + frame.substr(0, frame.size() / 2), 64);
  FrameReader r(reader());
  v1::DataFrameHeader h;
  uint64_t body = 0;
  ASSERT_TRUE(r.ReadHeader(Deadline(), 1 << 20, &h, &body).ok());
  ASSERT_TRUE(r.ReadBody(h, body, Deadline(), nullptr).ok());
  ASSERT_TRUE(r.ReadHeader(Deadline(), 1 << 20, &h, &body).ok());
  absl::Status st = r.ReadBody(h, body, Deadline(), nullptr);
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_NE(st.message().find("mid-frame"), std::string::npos) << st;

  FrameReader fresh(reader());
  st = fresh.ReadHeader(Deadline(), 1 << 20, &h, &body);
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_NE(st.message().find("closed by the peer"), std::string::npos) << st;
}

TEST_F(DataFrameTest, AnOversizedFrameIsRefusedBeforeItsBodyIsRead) {
  absl::Status st = ReadHeaderOf(Frames({Push(1000, 1)}), 100);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
}

TEST_F(DataFrameTest, AMalformedHeaderIsDataLoss) {
  // A prefix announcing a 4-byte header and no body, then 4 bytes that are
  // not a DataFrameHeader.
  char frame[16] = {4};
  std::memset(frame + 12, 0xff, 4);
  absl::Status st = ReadHeaderOf(std::string(frame, sizeof(frame)), 100);
  EXPECT_TRUE(absl::IsDataLoss(st)) << st;
}

TEST_F(DataFrameTest, NothingSentByTheDeadlineIsDeadlineExceeded) {
  FrameReader r(reader());
  v1::DataFrameHeader h;
  uint64_t body = 0;
  absl::Status st =
      r.ReadHeader(absl::Now() + absl::Milliseconds(20), 1 << 20, &h, &body);
  EXPECT_TRUE(absl::IsDeadlineExceeded(st)) << st;
}

}  // namespace
}  // namespace plexus
