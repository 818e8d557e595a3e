/* A test's probe on the real node: tries a TCP connection to ADDRESS PORT for at most
 * 3 seconds and prints what happened (connected, refused, timeout, ...). Built statically
 * into the sandbox image (e2e/node/node.sh); e2e/tests/node.rs runs it to show that pod
 * traffic to another network is dropped on this machine. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: probe ADDRESS PORT\n");
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
    fprintf(stderr, "probe: %s is not an IPv4 address\n", argv[1]);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    puts("connected");
    return 0;
  }
  if (errno != EINPROGRESS) {
    printf("failed: %s\n", strerror(errno));
    return 0;
  }
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  if (poll(&p, 1, 3000) == 0) {
    puts("timeout");
    return 0;
  }
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  puts(err == 0 ? "connected" : strerror(err));
  return 0;
}
