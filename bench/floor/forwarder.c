// The least a userspace VXLAN forwarder can do per packet, to measure the
// floor of the TAP/UDP design (not product code; the engine is
// packages/agent/native): one thread, epoll over one TAP and one UDP
// socket, one frame per system call, no offloads, one fixed peer, VNI 4242.
// Usage: forwarder TAP LOCAL_IP PEER_IP CPU(-1 = any) — runs until killed.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: forwarder TAP LOCAL_IP PEER_IP CPU\n");
    return 2;
  }
  int cpu = atoi(argv[4]);
  int tap = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (tap < 0 || ioctl(tap, TUNSETIFF, &ifr) != 0) {
    perror("cannot create the TAP");
    return 1;
  }
  int udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(4789)}, peer = local;
  if (inet_pton(AF_INET, argv[2], &local.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1 ||
      bind(udp, (struct sockaddr*)&local, sizeof local) != 0) {
    perror("cannot bind the UDP socket");
    return 1;
  }
  if (cpu >= 0) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
  }
  struct sched_param p = {.sched_priority = 1};  // as the engine's packet thread
  sched_setscheduler(0, SCHED_FIFO, &p);
  int ep = epoll_create1(0);
  struct epoll_event e = {.events = EPOLLIN, .data.u32 = 0};
  epoll_ctl(ep, EPOLL_CTL_ADD, tap, &e);
  e.data.u32 = 1;
  epoll_ctl(ep, EPOLL_CTL_ADD, udp, &e);
  static unsigned char buf[8 + 65536];
  const unsigned char vxlan[8] = {0x08, 0, 0, 0, 0, 0x10, 0x92, 0};  // I flag, VNI 4242
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    struct epoll_event ev[2];
    int n = epoll_wait(ep, ev, 2, -1);
    for (int i = 0; i < n; i++) {
      ssize_t r;
      if (ev[i].data.u32 == 0) {
        while ((r = read(tap, buf + 8, 65536)) > 0) {
          memcpy(buf, vxlan, 8);
          sendto(udp, buf, (size_t)r + 8, 0, (struct sockaddr*)&peer, sizeof peer);
        }
      } else {
        while ((r = recv(udp, buf, sizeof buf, 0)) > 8)
          if (write(tap, buf + 8, (size_t)r - 8) < 0) break;
      }
    }
  }
}
