/* The pod sandbox's process (the role of registry.k8s.io/pause, which cannot be pulled here): it holds the
 * pod's namespaces, reaps orphans (it is PID 1 when the pod shares its process namespace) and exits 0 on
 * SIGINT/SIGTERM. Compiled statically by tests/support/k8s.py, copied into docker/local/pause.Dockerfile. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = leave}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
