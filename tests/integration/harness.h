/*
 * Integration-test harness: throw-away PostgreSQL and nats-server, the relay binary, a reader.
 * One header per concern; this one includes them all, for the tests.
 */
#ifndef OUTBOX_RELAY_IT_HARNESS_H
#define OUTBOX_RELAY_IT_HARNESS_H

#include "harness_core.h"   /* temp dir, lifecycle, it_wait_until, it_tcase */
#include "harness_pg.h"     /* PostgreSQL 15, the replica, SQL helpers */
#include "harness_nats.h"   /* nats-server (one or a cluster), the JetStream client */
#include "harness_relay.h"  /* the relay process, its log, its commands */
#include "harness_http.h"   /* probes and metrics over HTTP */
#include "harness_audit.h"  /* a stream read back and checked against the outbox */
#include "harness_faults.h" /* dropped packets, /proc readings */

#endif
