/* Integration-test harness: fault injection and process readings. */
#ifndef OUTBOX_RELAY_IT_HARNESS_FAULTS_H
#define OUTBOX_RELAY_IT_HARNESS_FAULTS_H

#include <stdbool.h>
#include <sys/types.h>

/* ---- memory, sockets, lost packets ---- */

/* A "Name:   N kB" line of /proc/<pid>/status (e.g. "VmHWM", "VmRSS") in kB; -1 if unreadable. */
long it_proc_status_kb(pid_t pid, const char *name);

/*
 * Local ports of pid's TCP sockets connected to 127.0.0.1:remote_port (e.g.
 * a relay's PostgreSQL sessions: remote_port = it_pg_port()), read from
 * /proc (works on a stopped process too). Returns how many (at most max).
 */
int it_proc_tcp_local_ports(pid_t pid, int remote_port, int *ports, int max);

/* True when this process may drop loopback packets: root and iptables with the comment match. */
bool it_net_available(void);

/*
 * Drops every TCP packet between 127.0.0.1:port_a and 127.0.0.1:port_b,
 * both directions (iptables INPUT rules, -w, tagged with the comment
 * "outbox-test-<pid of the test process>"). Neither side sees a FIN or RST:
 * a lost node or a partition. The rules go with it_net_heal(); if the test
 * process ends first (a failed check), a watcher process it started deletes
 * them.
 */
void it_net_drop(int port_a, int port_b);
void it_net_heal(void); /* deletes this test's rules; safe to call at any time */

/* Checked-fixture teardown for tests that use it_net_drop: heal, then it_teardown. */
void it_net_teardown(void);

#endif
