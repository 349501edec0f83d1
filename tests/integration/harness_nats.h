/* Integration-test harness: throw-away nats-server 2.9 with JetStream (one or a cluster), the
 * test's JetStream client. */
#ifndef OUTBOX_RELAY_IT_HARNESS_NATS_H
#define OUTBOX_RELAY_IT_HARNESS_NATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <nats/nats.h>

/* ---- nats-server 2.9 with JetStream ---- */

/* First call: a store dir and a free port; later calls: the same store dir and port. */
void it_nats_start(void);
void it_nats_stop(void); /* graceful (SIGTERM), waits for exit */
void it_nats_restart(void);
void it_nats_kill(void); /* SIGKILL, reaped */

/*
 * nats-server configuration text (e.g. "max_payload: 65536\n") written to a
 * file in the temp dir and passed with -c from the next it_nats_start() on;
 * the harness's own flags (port, store dir, address, -js) still win. NULL:
 * no config file.
 */
void it_nats_set_config(const char *text);

/* A .creds file (user JWT and seed) the test's reader, it_js(), connects with from its first
 * connection on, e.g. to a server in operator mode. NULL: none. */
void it_nats_set_credentials(const char *creds_path);
int it_nats_port(void);
pid_t it_nats_pid(void);       /* 0 if stopped */
const char *it_nats_url(void); /* nats://127.0.0.1:port, for OUTBOX_NATS_URL */

/* SIGSTOP / SIGCONT nats-server: its connections stay open but nothing is answered. */
void it_nats_pause(void);
void it_nats_resume(void);

/* ---- the test's JetStream client (nats.c) ---- */

/* The test's JetStream context, connected on first use. */
jsCtx *it_js(void);

/* Creates a file-storage stream over `subjects` (NULL-terminated). */
void it_js_add_stream(const char *name, const char *const *subjects);

/* Points an existing stream at other `subjects` (NULL-terminated). */
void it_js_update_stream_subjects(const char *name, const char *const *subjects);

/* Messages currently in the stream (stream info State.Msgs); fails the test if it is missing. */
uint64_t it_js_stream_msgs(const char *name);
bool it_js_stream_exists(const char *name);

/* ---- a 3-node nats-server cluster ---- */

#define IT_CLUSTER_NODES 3

/*
 * Instead of it_nats_start: three nats-server -js processes on 127.0.0.1,
 * each with a generated config (server_name it-n1..3, cluster it-cluster,
 * free client and route ports, routes to the other two, its own store dir
 * under it_dir()). Returns once JetStream places a stream with 3 replicas
 * (a meta leader and every peer). From then on it_nats_url() is the
 * comma-separated URL of the three client ports, which it_js() and
 * it_relay_start() use. The nodes are stopped by it_teardown, and with the
 * test process like every child.
 */
void it_nats_cluster_start(void);
const char *it_nats_cluster_url(void);
int it_nats_cluster_port(int node); /* node 0..IT_CLUSTER_NODES-1, client port */
pid_t it_nats_cluster_pid(int node);

/* Checked-fixture setup: it_setup + PostgreSQL (migrated) + it_nats_cluster_start. */
void it_start_servers_cluster(void);

/* The connection under it_js(), e.g. for JetStream API requests nats.c has no call for. */
natsConnection *it_nats_conn(void);

/* it_js_add_stream with `replicas`, retried for up to 30 s while the cluster cannot place it. */
void it_js_add_stream_replicas(const char *name, const char *const *subjects, int replicas);

/* The server_name of the stream's cluster leader into buf; false if no leader answers (1 s). */
bool it_js_stream_leader(const char *name, char *buf, size_t len);

/* Asks the stream's leader ($JS.API.STREAM.LEADER.STEPDOWN) to step down; the reply must say
 * success. The leader it asked into old. */
void it_js_stream_step_down(const char *stream, char *old, size_t len);

/* Waits (15 s) until a node other than old leads the stream. */
void it_js_stream_wait_new_leader(const char *stream, const char *old);

/* The stream's configured replicas; fails the test if it is missing. */
int it_js_stream_replicas(const char *name);

#endif
