// What a context switch costs here: round trips through two pipes between
// two tasks pinned to CPU 0, once as two threads of one process and once as
// two processes (each switch then changes address space, as a ping's
// switch into the engine's thread does). Each round trip is two switches
// and four system calls. Prints one JSON line.
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static int a[2], b[2]; static int N = 20000;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static void* echo(void* x){(void)x;pin(0);char c;for(int i=0;i<N;i++){if(read(a[0],&c,1)!=1)break;if(write(b[1],&c,1)!=1)break;}return NULL;}
static double run(void){char c='x';double t0=now();for(int i=0;i<N;i++){if(write(a[1],&c,1)!=1||read(b[0],&c,1)!=1)return -1;}return (now()-t0)/N;}
int main(void){
  pin(0);
  pipe(a);pipe(b);pthread_t t;pthread_create(&t,NULL,echo,NULL);double th=run();pthread_join(t,NULL);
  pipe(a);pipe(b);pid_t p=fork();if(p==0){echo(NULL);_exit(0);}double pr=run();waitpid(p,NULL,0);
  printf("{\"bench\":\"floor\",\"measure\":\"switch\",\"roundTripUsThreads\":%.2f,\"roundTripUsProcesses\":%.2f}\n",th,pr);
}
