// Runs short commands (ip, bridge, nft…) for the agent without stalling its
// event loop. Node 20's child_process.spawn (libuv) forks the whole agent on
// the JavaScript thread: the kernel copies the page tables of a process of a
// few hundred MB, 5-20 ms during which nothing else in the agent runs, three
// times per `weft run`. glibc's posix_spawn uses clone(CLONE_VM|CLONE_VFORK)
// instead (no copy), and here it runs on a libuv worker thread, together with
// feeding stdin, collecting stdout/stderr and waiting for the exit: the
// JavaScript thread only sees the result.
//
// runCommand(argv: string[], env: string[], input: Buffer, maxOutputBytes: number)
//   -> Promise<{ exitCode: number | null, signal: number, stdout: Buffer,
//               stderr: Buffer, outputTruncated: boolean }>
// rejects with an Error carrying `code` (ENOENT…) when the program cannot be
// started at all.
//
// spawnDetached(argv: string[], env: string[], outputFd: number,
//               onExit: (exitCode: number | null, signal: number) => void) -> pid
//   starts a long-running program (a container's command) in a session of its
//   own, stdin /dev/null, stdout and stderr on outputFd; the spawn itself is
//   vfork-cheap, so it stays on the JavaScript thread. Its exit is seen through
//   a pidfd polled on Node's event loop (unreferenced: it does not keep the
//   agent alive), then reaped and reported. Throws (with `code`) if it cannot
//   start; spawnDetachedSupported() says whether this kernel has pidfds.
#include <errno.h>
#include <fcntl.h>
#include <napi.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "spawn.h"

namespace {

class FdCloser {
 public:
  explicit FdCloser(int* fds, size_t n) : fds_(fds), n_(n) {}
  ~FdCloser() {
    for (size_t i = 0; i < n_; i++)
      if (fds_[i] >= 0) close(fds_[i]);
  }

 private:
  int* fds_;
  size_t n_;
};

/**
 * posix_spawnp of argv with envp and the given file actions. The child starts
 * with every signal at its default and none blocked, as libuv's spawn does
 * (Node ignores SIGPIPE; ignored signals survive exec); `extraFlags` adds
 * e.g. POSIX_SPAWN_SETSID. Destroys `actions`. Returns 0 or an errno value.
 */
int spawnProgram(pid_t* pid, posix_spawn_file_actions_t* actions, std::vector<std::string>& argvStrings,
                 std::vector<std::string>& envStrings, short extraFlags) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | extraFlags);
  std::vector<char*> argv;
  for (auto& a : argvStrings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : envStrings) envp.push_back(e.data());
  envp.push_back(nullptr);
  // posix_spawnp searches PATH from the caller's environment; the agent's PATH is the child's.
  int err = posix_spawnp(pid, argv[0], actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(actions);
  posix_spawnattr_destroy(&attr);
  return err;
}

class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, std::vector<std::string> argv, std::vector<std::string> env_vars, std::string input,
            size_t max_output_bytes)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        argv_(std::move(argv)),
        env_(std::move(env_vars)),
        input_(std::move(input)),
        max_output_bytes_(max_output_bytes) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    // [0]/[1] stdin read/write, [2]/[3] stdout, [4]/[5] stderr.
    int fds[6] = {-1, -1, -1, -1, -1, -1};
    FdCloser closer(fds, 6);
    for (int i = 0; i < 3; i++) {
      if (pipe2(&fds[2 * i], O_CLOEXEC) != 0) return Fail("pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[0], 0);
    posix_spawn_file_actions_adddup2(&actions, fds[3], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[5], 2);
    pid_t pid;
    int err = spawnProgram(&pid, &actions, argv_, env_, 0);
    if (err != 0) {
      errno_ = err;
      return SetError(std::string(strerror(err)));
    }
    // The child's ends are the child's now.
    for (int i : {0, 3, 5}) {
      close(fds[i]);
      fds[i] = -1;
    }
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    size_t written = 0;
    if (input_.empty()) {
      close(fds[1]);
      fds[1] = -1;
    }
    char buf[65536];
    while (fds[1] >= 0 || fds[2] >= 0 || fds[4] >= 0) {
      pollfd p[3];
      int n = 0;
      int which[3];
      if (fds[1] >= 0) {
        p[n] = {fds[1], POLLOUT, 0};
        which[n++] = 1;
      }
      if (fds[2] >= 0) {
        p[n] = {fds[2], POLLIN, 0};
        which[n++] = 2;
      }
      if (fds[4] >= 0) {
        p[n] = {fds[4], POLLIN, 0};
        which[n++] = 4;
      }
      if (poll(p, n, -1) < 0) {
        if (errno == EINTR) continue;
        break;  // cannot happen with valid descriptors; the exit status below still tells
      }
      for (int i = 0; i < n; i++) {
        if (p[i].revents == 0) continue;
        int& fd = fds[which[i]];
        if (which[i] == 1) {
          ssize_t w = write(fd, input_.data() + written, input_.size() - written);
          if (w > 0) written += size_t(w);
          // A program that exits without reading all its input closed the pipe (EPIPE): its exit code tells why.
          if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input_.size() ||
              (p[i].revents & (POLLERR | POLLHUP))) {
            close(fd);
            fd = -1;
          }
          continue;
        }
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          std::string& out = which[i] == 2 ? stdout_ : stderr_;
          if (out.size() + size_t(r) > max_output_bytes_) {
            truncated_ = true;
            kill(pid, SIGKILL);  // as child_process did: an answer this large is a runaway
          } else {
            out.append(buf, size_t(r));
          }
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
          close(fd);
          fd = -1;
        }
      }
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) return Fail("waitpid");
    }
    if (WIFEXITED(status)) {
      exited_ = true;
      exit_code_ = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      signal_ = WTERMSIG(status);
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("exitCode", exited_ ? Napi::Value(Napi::Number::New(env, exit_code_)) : env.Null());
    r.Set("signal", signal_);
    r.Set("stdout", Napi::Buffer<char>::Copy(env, stdout_.data(), stdout_.size()));
    r.Set("stderr", Napi::Buffer<char>::Copy(env, stderr_.data(), stderr_.size()));
    r.Set("outputTruncated", truncated_);
    deferred_.Resolve(r);
  }

  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    if (errno_ != 0) {
      // The same `code` Node's child_process reports (ENOENT for a missing program…).
      const char* name = errno_ == ENOENT ? "ENOENT" : errno_ == EACCES ? "EACCES" : "ESPAWN";
      err.Set("code", name);
      err.Set("errno", Napi::Number::New(Env(), errno_));
    }
    deferred_.Reject(err.Value());
  }

 private:
  void Fail(const char* what) {
    errno_ = errno;
    SetError(std::string(what) + ": " + strerror(errno_));
  }

  Napi::Promise::Deferred deferred_;
  std::vector<std::string> argv_;
  std::vector<std::string> env_;
  std::string input_;
  size_t max_output_bytes_;
  std::string stdout_;
  std::string stderr_;
  bool truncated_ = false;
  bool exited_ = false;
  int exit_code_ = 0;
  int signal_ = 0;
  int errno_ = 0;
};

std::vector<std::string> stringArray(const Napi::Env& env, const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value item = a.Get(i);
    if (!item.IsString()) throw Napi::TypeError::New(env, std::string(what) + " must be an array of strings");
    std::string s = item.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos)
      throw Napi::TypeError::New(env, std::string(what) + " must not contain NUL characters");
    out.push_back(std::move(s));
  }
  return out;
}

Napi::Value RunCommand(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> argv = stringArray(env, info[0], "argv");
  if (argv.empty()) throw Napi::TypeError::New(env, "argv must name a program");
  std::vector<std::string> envp = stringArray(env, info[1], "env");
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(env, "input must be a Buffer");
  Napi::Buffer<char> input = info[2].As<Napi::Buffer<char>>();
  if (!info[3].IsNumber()) throw Napi::TypeError::New(env, "maxOutputBytes must be a number");
  auto* worker = new RunWorker(env, std::move(argv), std::move(envp), std::string(input.Data(), input.Length()),
                               size_t(info[3].As<Napi::Number>().Int64Value()));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

int pidfdOpen(pid_t pid) { return int(syscall(SYS_pidfd_open, pid, 0)); }

/** One detached program whose exit is awaited on the event loop. */
struct ExitWatch {
  uv_poll_t poll;
  pid_t pid;
  int pidfd;
  napi_env env;
  Napi::FunctionReference onExit;
  std::unique_ptr<Napi::AsyncContext> context;
};

void OnPidfdReadable(uv_poll_t* handle, int status, int events) {
  auto* w = static_cast<ExitWatch*>(handle->data);
  int wstatus = 0;
  pid_t r = waitpid(w->pid, &wstatus, WNOHANG);
  if (r == 0 || (r < 0 && errno == EINTR)) return;  // not yet
  uv_poll_stop(handle);
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) {
    auto* done = static_cast<ExitWatch*>(h->data);
    close(done->pidfd);
    delete done;
  });
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  Napi::Value code = env.Null();
  int signal = 0;
  if (r == w->pid && WIFEXITED(wstatus)) code = Napi::Number::New(env, WEXITSTATUS(wstatus));
  else if (r == w->pid && WIFSIGNALED(wstatus)) signal = WTERMSIG(wstatus);
  try {
    w->onExit.MakeCallback(env.Global(), {code, Napi::Number::New(env, signal)}, *w->context);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());  // as an exception in any callback: 'uncaughtException'
  }
}

Napi::Value SpawnDetachedSupported(const Napi::CallbackInfo& info) {
  int fd = pidfdOpen(getpid());
  if (fd >= 0) close(fd);
  return Napi::Boolean::New(info.Env(), fd >= 0);
}

Napi::Value SpawnDetached(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> args = stringArray(env, info[0], "argv");
  if (args.empty()) throw Napi::TypeError::New(env, "argv must name a program");
  std::vector<std::string> envVars = stringArray(env, info[1], "env");
  if (!info[2].IsNumber()) throw Napi::TypeError::New(env, "outputFd must be a file descriptor");
  int outputFd = info[2].As<Napi::Number>().Int32Value();
  if (!info[3].IsFunction()) throw Napi::TypeError::New(env, "onExit must be a function");

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, outputFd, 1);
  posix_spawn_file_actions_adddup2(&actions, outputFd, 2);
  pid_t pid;
  int err = spawnProgram(&pid, &actions, args, envVars, POSIX_SPAWN_SETSID);
  if (err != 0) {
    Napi::Error e = Napi::Error::New(env, std::string("cannot start ") + args[0] + ": " + strerror(err));
    e.Set("code", err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : "ESPAWN");
    throw e;
  }
  int pidfd = pidfdOpen(pid);  // a zombie still has one: an early exit is not missed
  if (pidfd < 0) {
    // Cannot watch it: end it rather than leave an unreaped child (spawnDetachedSupported said yes, so rare).
    int openErr = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    throw Napi::Error::New(env, std::string("pidfd_open: ") + strerror(openErr));
  }
  auto* w = new ExitWatch();
  w->pid = pid;
  w->pidfd = pidfd;
  w->env = env;
  w->onExit = Napi::Persistent(info[3].As<Napi::Function>());
  w->context = std::make_unique<Napi::AsyncContext>(env, "weft:spawnDetached");
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &w->poll, pidfd);
  w->poll.data = w;
  uv_poll_start(&w->poll, UV_READABLE, OnPidfdReadable);
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  return Napi::Number::New(env, pid);
}

}  // namespace

namespace weft {

void InitSpawn(Napi::Env env, Napi::Object exports) {
  exports.Set("runCommand", Napi::Function::New(env, RunCommand));
  exports.Set("spawnDetached", Napi::Function::New(env, SpawnDetached));
  exports.Set("spawnDetachedSupported", Napi::Function::New(env, SpawnDetachedSupported));
}

}  // namespace weft
