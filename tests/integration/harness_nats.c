/* Integration-test harness: throw-away nats-server (one, or a 3-node cluster) and the test's
 * JetStream client. */
#include "harness_internal.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

/* ---- nats-server ---- */

static const char *it_nats_binary(void)
{
    static char found[PATH_MAX];
    const char *path = getenv("PATH");
    char dirs[8192];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/bin:/usr/local/bin:/usr/local/sbin",
             path ? path : "");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/nats-server", d);
        if (access(found, X_OK) == 0)
            return found;
    }
    ck_abort_msg("nats-server not found (install the nats-server package)");
    return NULL;
}

/* True once a server on 127.0.0.1:port accepts a connection and sends its INFO line. */
static bool it_nats_port_ready(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char buf[8] = {0};
        if (poll(&p, 1, 2000) == 1 && recv(fd, buf, 5, MSG_WAITALL) == 5)
            ok = memcmp(buf, "INFO ", 5) == 0;
    }
    close(fd);
    return ok;
}

/* True once the harness's server accepts a connection and sends its INFO line. */
static bool it_nats_ready(void)
{
    return it_nats_port_ready(it.nats_port);
}

void it_nats_start(void)
{
    it_setup();
    if (it.nats_pid > 0)
        return;
    char store[PATH_MAX], log_path[PATH_MAX], port[16];
    snprintf(store, sizeof store, "%s/nats", it.dir);
    snprintf(log_path, sizeof log_path, "%s/nats.log", it.dir);
    if (!it.nats_initialized) {
        it.nats_port = it_free_port();
        snprintf(it.nats_url, sizeof it.nats_url, "nats://127.0.0.1:%d", it.nats_port);
        it.nats_initialized = true;
    }
    snprintf(port, sizeof port, "%d", it.nats_port);
    const char *argv[] = {
        it_nats_binary(), "-js", "-sd", store, "-a", "127.0.0.1", "-p", port, NULL, NULL, NULL};
    if (it.nats_conf[0]) {
        /* Flags win over the file: port, store dir and address stay the harness's. */
        argv[8] = "-c";
        argv[9] = it.nats_conf;
    }
    it.nats_pid = it_spawn(argv, NULL, log_path, false, SIGKILL);
    int64_t deadline = it_now_ms() + 20000;
    while (!it_nats_ready()) {
        int st;
        if (waitpid(it.nats_pid, &st, WNOHANG) == it.nats_pid) {
            char why[64];
            it_untrack(it.nats_pid);
            it.nats_pid = 0;
            it_dump_tail("nats-server log", log_path, 40);
            ck_abort_msg("nats-server exited at start: %s",
                         it_describe_status(st, why, sizeof why));
        }
        if (it_now_ms() >= deadline) {
            it_dump_tail("nats-server log", log_path, 40);
            ck_abort_msg("nats-server not ready on port %d within 20 s", it.nats_port);
        }
        it_sleep_ms(20);
    }
}

void it_nats_set_config(const char *text)
{
    it_setup();
    if (text == NULL) {
        it.nats_conf[0] = '\0';
        return;
    }
    snprintf(it.nats_conf, sizeof it.nats_conf, "%s/nats.conf", it.dir);
    FILE *f = fopen(it.nats_conf, "w");
    ck_assert_msg(f != NULL, "create %s: %s", it.nats_conf, strerror(errno));
    fputs(text, f);
    ck_assert_msg(fclose(f) == 0, "write %s: %s", it.nats_conf, strerror(errno));
}

void it_nats_set_credentials(const char *creds_path)
{
    it_setup();
    snprintf(it.nats_creds, sizeof it.nats_creds, "%s", creds_path ? creds_path : "");
}

void it_nats_stop(void)
{
    if (it.nats_pid <= 0)
        return;
    it_stop_process(it.nats_pid, SIGTERM, 30000);
    it.nats_pid = 0;
}

void it_nats_restart(void)
{
    it_nats_stop();
    it_nats_start();
}

void it_nats_kill(void)
{
    if (it.nats_pid <= 0)
        return;
    it_stop_process(it.nats_pid, SIGKILL, 0);
    it.nats_pid = 0;
}

int it_nats_port(void)
{
    return it.nats_port;
}

pid_t it_nats_pid(void)
{
    return it.nats_pid;
}

const char *it_nats_url(void)
{
    return it.nats_url;
}

/* ---- the test's JetStream client ---- */

/* nats.c's SetURL takes one URL: a cluster's comma-separated list goes through SetServers. */
static natsStatus it_nats_set_servers(natsOptions *opts, const char *list)
{
    char copy[sizeof it.nats_url];
    const char *servers[8];
    int n = 0;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *u = strtok_r(copy, ",", &save); u && n < 8;
         u = strtok_r(NULL, ",", &save))
        servers[n++] = u;
    return natsOptions_SetServers(opts, servers, n);
}

jsCtx *it_js(void)
{
    if (it.js)
        return it.js;
    ck_assert_msg(it.nats_initialized, "nats-server not started");
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = it_nats_set_servers(opts, it.nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 5000);
    /* Tests restart nats-server under the reader: keep reconnecting, quickly. */
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 100);
    if (s == NATS_OK && it.nats_creds[0])
        s = natsOptions_SetUserCredentialsFromFiles(opts, it.nats_creds, NULL);
    if (s == NATS_OK)
        s = natsConnection_Connect(&it.nc, opts);
    natsOptions_Destroy(opts);
    ck_assert_msg(s == NATS_OK, "connect %s: %s", it.nats_url, natsStatus_GetText(s));
    s = natsConnection_JetStream(&it.js, it.nc, NULL);
    ck_assert_msg(s == NATS_OK, "JetStream context: %s", natsStatus_GetText(s));
    return it.js;
}

/* A file stream on subjects (NULL-terminated) with `replicas` copies. */
static void it_stream_config(jsStreamConfig *cfg, const char *name, const char *const *subjects,
                             int replicas)
{
    jsStreamConfig_Init(cfg);
    int n = 0;
    while (subjects[n])
        n++;
    cfg->Name = name;
    cfg->Subjects = (const char **)subjects;
    cfg->SubjectsLen = n;
    cfg->Storage = js_FileStorage;
    cfg->Replicas = replicas;
}

void it_js_add_stream(const char *name, const char *const *subjects)
{
    jsStreamConfig cfg;
    it_stream_config(&cfg, name, subjects, 1);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "add stream %s: %s (%d: %s)", name, natsStatus_GetText(s),
                  (int)jerr, nats_GetLastError(NULL));
    jsStreamInfo_Destroy(si);
}

void it_js_update_stream_subjects(const char *name, const char *const *subjects)
{
    jsStreamConfig cfg;
    it_stream_config(&cfg, name, subjects, 1);
    jsErrCode jerr = 0;
    natsStatus s = js_UpdateStream(NULL, it_js(), &cfg, NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "update stream %s: %s (%d)", name, natsStatus_GetText(s),
                  (int)jerr);
}

jsStreamInfo *it_js_stream_info(const char *name, natsStatus *status)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *status = js_GetStreamInfo(&si, it_js(), name, NULL, &jerr);
    return si;
}

bool it_js_stream_exists(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK || s == NATS_NOT_FOUND, "stream info %s: %s", name,
                  natsStatus_GetText(s));
    jsStreamInfo_Destroy(si);
    return s == NATS_OK;
}

uint64_t it_js_stream_msgs(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

/* ---- nats-server freeze ---- */

void it_nats_pause(void)
{
    ck_assert_msg(it.nats_pid > 0, "nats-server is not running");
    ck_assert_msg(kill(it.nats_pid, SIGSTOP) == 0, "SIGSTOP nats-server: %s", strerror(errno));
}

void it_nats_resume(void)
{
    ck_assert_msg(it.nats_pid > 0, "nats-server is not running");
    ck_assert_msg(kill(it.nats_pid, SIGCONT) == 0, "SIGCONT nats-server: %s", strerror(errno));
}

/* ---- a 3-node nats-server cluster ---- */

/* Outside `it`, like the replica: it_teardown() stops the nodes before PostgreSQL. */
static struct {
    pid_t owner; /* the process that started them */
    pid_t pid[IT_CLUSTER_NODES];
    int port[IT_CLUSTER_NODES];  /* client */
    int route[IT_CLUSTER_NODES]; /* cluster (route) listener */
    char log_path[IT_CLUSTER_NODES][PATH_MAX];
} it_cluster;

/* A free port none of the first `n` of `taken` holds (two binds to port 0 may agree). */
static int it_free_port_except(const int *taken, int n)
{
    for (;;) {
        int port = it_free_port(), i = 0;
        while (i < n && taken[i] != port)
            i++;
        if (i == n)
            return port;
    }
}

static void it_nats_cluster_write_config(int node, const char *path)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "create %s: %s", path, strerror(errno));
    fprintf(f,
            "server_name: it-n%d\n"
            "listen: 127.0.0.1:%d\n"
            "jetstream { store_dir: \"%s/nats-n%d\" }\n"
            "cluster {\n  name: it-cluster\n  listen: 127.0.0.1:%d\n  routes: [\n",
            node + 1, it_cluster.port[node], it.dir, node + 1, it_cluster.route[node]);
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        if (i != node)
            fprintf(f, "    nats-route://127.0.0.1:%d\n", it_cluster.route[i]);
    fprintf(f, "  ]\n}\n");
    ck_assert_msg(fclose(f) == 0, "write %s: %s", path, strerror(errno));
}

static void it_nats_cluster_dump_logs(void)
{
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        it_dump_tail("nats-server node log", it_cluster.log_path[i], 30);
}

/* Creates an R3 stream on a JetStream API that may not be placing streams yet; false: retry. */
static bool it_js_try_add_stream(const char *name, const char *const *subjects, int replicas,
                                 natsStatus *s, jsErrCode *jerr)
{
    jsStreamConfig cfg;
    it_stream_config(&cfg, name, subjects, replicas);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    jsStreamInfo *si = NULL;
    *jerr = 0;
    *s = js_AddStream(&si, it_js(), &cfg, &jo, jerr);
    jsStreamInfo_Destroy(si);
    return *s == NATS_OK;
}

struct it_stream_create {
    const char *name;
    const char *const *subjects;
    int replicas;
    natsStatus s;
    jsErrCode jerr;
};

static bool it_stream_created(void *arg)
{
    struct it_stream_create *c = arg;
    return it_js_try_add_stream(c->name, c->subjects, c->replicas, &c->s, &c->jerr);
}

void it_js_add_stream_replicas(const char *name, const char *const *subjects, int replicas)
{
    /* A fresh cluster answers "no suitable peers" / times out until every node has joined. */
    struct it_stream_create c = {name, subjects, replicas, NATS_OK, 0};
    ck_assert_msg(it_wait_until(it_stream_created, &c, 30000),
                  "add stream %s with %d replicas: %s (%d: %s)", name, replicas,
                  natsStatus_GetText(c.s), (int)c.jerr, nats_GetLastError(NULL));
}

void it_nats_cluster_start(void)
{
    it_setup();
    ck_assert_msg(!it.nats_initialized, "a cluster replaces it_nats_start, not both");
    int taken[2 * IT_CLUSTER_NODES], ntaken = 0;
    for (int i = 0; i < IT_CLUSTER_NODES; i++) {
        it_cluster.port[i] = taken[ntaken] = it_free_port_except(taken, ntaken);
        ntaken++;
        it_cluster.route[i] = taken[ntaken] = it_free_port_except(taken, ntaken);
        ntaken++;
    }
    it_cluster.owner = getpid();
    size_t used = 0;
    for (int i = 0; i < IT_CLUSTER_NODES; i++) {
        char conf[PATH_MAX];
        snprintf(conf, sizeof conf, "%s/nats-n%d.conf", it.dir, i + 1);
        snprintf(it_cluster.log_path[i], sizeof it_cluster.log_path[i], "%s/nats-n%d.log", it.dir,
                 i + 1);
        it_nats_cluster_write_config(i, conf);
        const char *argv[] = {it_nats_binary(), "-c", conf, NULL};
        it_cluster.pid[i] = it_spawn(argv, NULL, it_cluster.log_path[i], false, SIGKILL);
        used += (size_t)snprintf(it.nats_url + used, sizeof it.nats_url - used,
                                 "%snats://127.0.0.1:%d", i ? "," : "", it_cluster.port[i]);
    }
    /* it_js() and it_relay_start() now talk to the cluster. */
    it.nats_port = it_cluster.port[0];
    it.nats_initialized = true;

    int64_t deadline = it_now_ms() + 20000;
    for (int i = 0; i < IT_CLUSTER_NODES; i++)
        while (!it_nats_port_ready(it_cluster.port[i])) {
            int st;
            if (waitpid(it_cluster.pid[i], &st, WNOHANG) == it_cluster.pid[i]) {
                char why[64];
                it_untrack(it_cluster.pid[i]);
                it_cluster.pid[i] = 0;
                it_nats_cluster_dump_logs();
                ck_abort_msg("nats-server node %d exited at start: %s", i + 1,
                             it_describe_status(st, why, sizeof why));
            }
            if (it_now_ms() >= deadline) {
                it_nats_cluster_dump_logs();
                ck_abort_msg("nats-server node %d not ready on port %d within 20 s", i + 1,
                             it_cluster.port[i]);
            }
            it_sleep_ms(20);
        }
    /* JetStream is usable once a meta leader places a stream on every node. */
    const char *subjects[] = {"it.cluster.probe", NULL};
    struct it_stream_create c = {"IT_CLUSTER_PROBE", subjects, IT_CLUSTER_NODES, NATS_OK, 0};
    if (!it_wait_until(it_stream_created, &c, 30000)) {
        it_nats_cluster_dump_logs();
        ck_abort_msg("the cluster places no R%d stream within 30 s: %s (%d)", IT_CLUSTER_NODES,
                     natsStatus_GetText(c.s), (int)c.jerr);
    }
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(it_js(), "IT_CLUSTER_PROBE", NULL, &jerr);
    ck_assert_msg(s == NATS_OK, "delete the probe stream: %s (%d)", natsStatus_GetText(s),
                  (int)jerr);
}

const char *it_nats_cluster_url(void)
{
    ck_assert_msg(it_cluster.owner == getpid(), "no cluster running");
    return it.nats_url;
}

int it_nats_cluster_port(int node)
{
    return it_cluster.port[node];
}

pid_t it_nats_cluster_pid(int node)
{
    return it_cluster.pid[node];
}

void it_nats_cluster_teardown(void)
{
    if (it_cluster.owner == getpid())
        for (int i = 0; i < IT_CLUSTER_NODES; i++)
            it_stop_process(it_cluster.pid[i], SIGKILL, 0);
    memset(&it_cluster, 0, sizeof it_cluster);
}

void it_start_servers_cluster(void)
{
    it_setup();
    it_pg_start();
    it_nats_cluster_start();
}

natsConnection *it_nats_conn(void)
{
    it_js();
    return it.nc;
}

/* Stream info with a short deadline: during an election nobody answers for a while. */
static jsStreamInfo *it_js_stream_info_quick(const char *name, natsStatus *status)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *status = js_GetStreamInfo(&si, it_js(), name, &jo, &jerr);
    return si;
}

bool it_js_stream_leader(const char *name, char *buf, size_t len)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info_quick(name, &s);
    bool found = s == NATS_OK && si->Cluster != NULL && si->Cluster->Leader != NULL &&
                 si->Cluster->Leader[0] != '\0';
    if (found)
        snprintf(buf, len, "%s", si->Cluster->Leader);
    jsStreamInfo_Destroy(si);
    return found;
}

struct it_stream_leader {
    const char *stream;
    const char *old; /* NULL: any leader will do */
    char name[128];
};

static bool it_stream_led(void *arg)
{
    struct it_stream_leader *l = arg;
    return it_js_stream_leader(l->stream, l->name, sizeof l->name) &&
           (l->old == NULL || strcmp(l->name, l->old) != 0);
}

void it_js_stream_step_down(const char *stream, char *old, size_t len)
{
    struct it_stream_leader l = {.stream = stream};
    ck_assert_msg(it_wait_until(it_stream_led, &l, 10000), "stream %s has no leader", stream);
    snprintf(old, len, "%s", l.name);
    char subject[256];
    snprintf(subject, sizeof subject, "$JS.API.STREAM.LEADER.STEPDOWN.%s", stream);
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_RequestString(&reply, it_nats_conn(), subject, "", 5000);
    ck_assert_msg(s == NATS_OK, "stepdown request: %s", natsStatus_GetText(s));
    json_error_t jerr;
    json_t *doc =
        json_loadb(natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), 0, &jerr);
    ck_assert_msg(doc != NULL && json_is_true(json_object_get(doc, "success")),
                  "stepdown of %s refused: %.*s", stream, natsMsg_GetDataLength(reply),
                  natsMsg_GetData(reply));
    json_decref(doc);
    natsMsg_Destroy(reply);
}

void it_js_stream_wait_new_leader(const char *stream, const char *old)
{
    struct it_stream_leader l = {.stream = stream, .old = old};
    ck_assert_msg(it_wait_until(it_stream_led, &l, 15000),
                  "stream %s still led by %s 15 s after its stepdown", stream, old);
    fprintf(stderr, "leader of %s: %s -> %s\n", stream, old, l.name);
}

int it_js_stream_replicas(const char *name)
{
    natsStatus s;
    jsStreamInfo *si = it_js_stream_info(name, &s);
    ck_assert_msg(s == NATS_OK, "stream info %s: %s", name, natsStatus_GetText(s));
    int replicas = si->Config->Replicas;
    jsStreamInfo_Destroy(si);
    return replicas;
}
