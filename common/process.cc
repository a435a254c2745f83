#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace plexus {
namespace {

absl::Status ErrnoError(absl::string_view what) {
  int e = errno;
  std::string msg = absl::StrCat(what, ": ", std::strerror(e));
  if (e == ENOENT) return absl::NotFoundError(msg);
  if (e == EACCES || e == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const SubprocessOptions& options) {
  if (options.argv.empty()) {
    return absl::InvalidArgumentError("Subprocess: empty argv");
  }
  // Everything the child needs is prepared before fork: after fork only
  // async-signal-safe calls are allowed.
  std::vector<char*> argv;
  for (const auto& a : options.argv)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int log_fd = -1;
  if (!options.log_file.empty()) {
    log_fd = open(options.log_file.c_str(),
                  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return ErrnoError(absl::StrCat("open ", options.log_file));
  }
  // A pipe that the child closes on exec (CLOEXEC): reading EOF means exec
  // succeeded; reading an errno means it failed.
  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe2");
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& [k, v] : options.env) {
    std::string prefix = k + "=";
    for (auto it = env_strings.begin(); it != env_strings.end();) {
      it = it->rfind(prefix, 0) == 0 ? env_strings.erase(it) : it + 1;
    }
    env_strings.push_back(prefix + v);
  }
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    close(exec_pipe[0]);
    close(exec_pipe[1]);
    if (log_fd >= 0) close(log_fd);
    return ErrnoError("fork");
  }
  if (pid == 0) {
    if (options.kill_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    if (options.new_session) setsid();
    // Signals blocked in the parent (daemons block SIGTERM) must not be
    // inherited by the child.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (log_fd >= 0) {
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execve(argv[0], argv.data(), envp.data());
    int e = errno;
    ssize_t ignored = write(exec_pipe[1], &e, sizeof(e));
    (void)ignored;
    _exit(127);
  }
  close(exec_pipe[1]);
  if (log_fd >= 0) close(log_fd);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(exec_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  auto proc = std::unique_ptr<Subprocess>(new Subprocess(pid));
  if (n == sizeof(child_errno)) {
    proc->Wait(absl::Seconds(5)).IgnoreError();
    errno = child_errno;
    return ErrnoError(absl::StrCat("exec ", options.argv[0]));
  }
  return proc;
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    TryReap(/*block=*/true).IgnoreError();
  }
}

absl::Status Subprocess::Signal(int sig) {
  if (reaped_) {
    return absl::FailedPreconditionError(
        absl::StrCat("process ", pid_, " has already exited"));
  }
  if (kill(pid_, sig) != 0) return ErrnoError(absl::StrCat("kill ", pid_));
  return absl::OkStatus();
}

absl::StatusOr<int> Subprocess::TryReap(bool block) {
  if (reaped_) return exit_status_;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ErrnoError(absl::StrCat("waitpid ", pid_));
  if (r == 0) {
    return absl::DeadlineExceededError(
        absl::StrCat("process ", pid_, " is still running"));
  }
  reaped_ = true;
  exit_status_ = DecodeWaitStatus(status);
  return exit_status_;
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (reaped_) return exit_status_;
  // A pidfd becomes readable when the child exits: no polling loop needed.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd >= 0) {
    struct pollfd pfd = {pidfd, POLLIN, 0};
    absl::Time deadline = absl::Now() + timeout;
    int r;
    do {
      int ms = static_cast<int>(absl::ToInt64Milliseconds(
          std::max(absl::ZeroDuration(), deadline - absl::Now())));
      r = poll(&pfd, 1, ms);
    } while (r < 0 && errno == EINTR);
    close(pidfd);
    return TryReap(/*block=*/r > 0);
  }
  // Old kernels: poll waitpid with a growing interval.
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration step = absl::Milliseconds(1);
  while (true) {
    auto r = TryReap(/*block=*/false);
    if (r.ok() || !absl::IsDeadlineExceeded(r.status())) return r;
    if (absl::Now() >= deadline) return r;
    absl::SleepFor(step);
    step = std::min(step * 2, absl::Milliseconds(50));
  }
}

bool Subprocess::Running() {
  auto r = TryReap(/*block=*/false);
  return !r.ok() && absl::IsDeadlineExceeded(r.status());
}

absl::StatusOr<int> WaitForPortFile(const std::string& path,
                                    absl::Duration timeout,
                                    Subprocess* process) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration step = absl::Milliseconds(1);
  while (true) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    int port = 0;
    if (in && absl::SimpleAtoi(absl::StripAsciiWhitespace(ss.str()), &port) &&
        port > 0) {
      return port;
    }
    if (process != nullptr && !process->Running()) {
      return absl::UnavailableError(absl::StrCat(
          "process ", process->pid(), " exited before writing ", path));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no port in ", path, " after ", absl::FormatDuration(timeout)));
    }
    // The daemon writes the file once; this is a wait on another process,
    // with a growing interval.
    absl::SleepFor(step);
    step = std::min(step * 2, absl::Milliseconds(20));
  }
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int e = errno;
    std::string msg =
        absl::StrCat("cannot read ", what, " ", path, ": ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(msg)
                       : absl::PermissionDeniedError(msg);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents) {
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(absl::StrCat("open ", tmp));
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status st = ErrnoError(absl::StrCat("write ", tmp));
      close(fd);
      unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    absl::Status st = ErrnoError(absl::StrCat("fsync ", tmp));
    unlink(tmp.c_str());
    return st;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = ErrnoError(absl::StrCat("rename ", tmp, " -> ", path));
    unlink(tmp.c_str());
    return st;
  }
  return absl::OkStatus();
}

}  // namespace plexus
