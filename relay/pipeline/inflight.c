/* The held rows: hash tables by id and by message, and per-key FIFO queues. */
#include "outbox_relay/pipeline/inflight.h"

#include <stdlib.h>
#include <string.h>

struct key_queue {
    char *key;
    struct outbox_row *head, *tail;
    size_t failed;          /* rows in the queue that failed and hold the key */
    struct key_queue *next; /* hash chain */
};

struct inflight {
    size_t nbuckets; /* power of two, at least twice the row cap: chains stay short */
    struct outbox_row **by_id;
    struct outbox_row **by_msg;
    struct key_queue **by_key;
    struct outbox_row *all; /* doubly linked list of every row */
    size_t count, publishing;
    int64_t bytes;  /* payload + header bytes of every held row */
    bool pipelined; /* a key's rows may be published while earlier ones are */
};

static size_t hash_u64(uint64_t x, size_t nbuckets)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & (nbuckets - 1);
}

static size_t hash_str(const char *s, size_t nbuckets)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return hash_u64(h, nbuckets);
}

struct inflight *inflight_create(size_t max_rows, char *err, size_t errlen)
{
    struct inflight *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "inflight: out of memory");
        return NULL;
    }
    t->nbuckets = 64;
    while (t->nbuckets < max_rows * 2)
        t->nbuckets *= 2;
    t->by_id = calloc(t->nbuckets, sizeof(*t->by_id));
    t->by_msg = calloc(t->nbuckets, sizeof(*t->by_msg));
    t->by_key = calloc(t->nbuckets, sizeof(*t->by_key));
    if (!t->by_id || !t->by_msg || !t->by_key) {
        inflight_destroy(t);
        snprintf(err, errlen, "inflight: out of memory");
        return NULL;
    }
    return t;
}

void outbox_row_free(struct outbox_row *row)
{
    if (row == NULL)
        return;
    natsMsg_Destroy(row->msg);
    free(row->invalid);
    free(row->ordering_key);
    free(row);
}

static void remove_from_key(struct inflight *t, struct outbox_row *row);
static void remove_row(struct inflight *t, struct outbox_row *row);

void inflight_destroy(struct inflight *t)
{
    if (t == NULL)
        return;
    inflight_drop_all(t);
    free(t->by_id);
    free(t->by_msg);
    free(t->by_key);
    free(t);
}

size_t inflight_count(const struct inflight *t)
{
    return t->count;
}

size_t inflight_ids_above(const struct inflight *t, int64_t above, int64_t *ids, size_t max)
{
    size_t n = 0;
    for (const struct outbox_row *row = t->all; row != NULL; row = row->all_next) {
        if (row->id <= above)
            continue;
        if (n == max)
            return max + 1; /* the caller only needs to know there are more */
        ids[n++] = row->id;
    }
    return n;
}

int64_t inflight_bytes(const struct inflight *t)
{
    return t->bytes;
}

size_t inflight_publishing(const struct inflight *t)
{
    return t->publishing;
}

void inflight_set_pipelined(struct inflight *t, bool pipelined)
{
    t->pipelined = pipelined;
}

bool inflight_pipelined(const struct inflight *t)
{
    return t->pipelined;
}

bool inflight_first_of_key(const struct outbox_row *row)
{
    return row->key == NULL || row->key->head == row;
}

struct outbox_row *inflight_find(const struct inflight *t, int64_t id)
{
    for (struct outbox_row *r = t->by_id[hash_u64((uint64_t)id, t->nbuckets)]; r; r = r->id_next)
        if (r->id == id)
            return r;
    return NULL;
}

static struct key_queue **key_slot(struct inflight *t, const char *key)
{
    struct key_queue **slot = &t->by_key[hash_str(key, t->nbuckets)];
    while (*slot != NULL && strcmp((*slot)->key, key) != 0)
        slot = &(*slot)->next;
    return slot;
}

bool inflight_add(struct inflight *t, struct outbox_row *row)
{
    size_t b = hash_u64((uint64_t)row->id, t->nbuckets);
    row->id_next = t->by_id[b];
    t->by_id[b] = row;
    row->all_prev = NULL;
    row->all_next = t->all;
    if (t->all != NULL)
        t->all->all_prev = row;
    t->all = row;
    t->count++;
    t->bytes += row->bytes;
    row->state = ROW_WAITING;
    row->key = NULL;
    row->key_next = NULL;
    row->behind_failed = false;
    if (row->ordering_key == NULL)
        return true;

    struct key_queue **slot = key_slot(t, row->ordering_key);
    if (*slot != NULL) {
        /* Pipelined, a publishing tail means the whole queue is publishing: a
         * row that waits or failed stops every row behind it from going. */
        bool go = t->pipelined && (*slot)->tail->state == ROW_PUBLISHING && (*slot)->failed == 0;
        (*slot)->tail->key_next = row;
        (*slot)->tail = row;
        row->key = *slot;
        return go;
    }
    struct key_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        /* Without a queue the row cannot be ordered: hold it back; a later
         * scan re-claims it. Callers see it as waiting and it is dropped at
         * the next drop. */
        return false;
    }
    q->key = row->ordering_key; /* borrowed: the queue never outlives its rows */
    q->head = q->tail = row;
    *slot = q;
    row->key = q;
    return true;
}

void inflight_sent(struct inflight *t, struct outbox_row *row, const natsMsg *sent, double now)
{
    row->sent_at = now;
    size_t b = hash_u64((uint64_t)(uintptr_t)sent, t->nbuckets);
    row->sent = sent;
    row->msg_next = t->by_msg[b];
    t->by_msg[b] = row;
    row->state = ROW_PUBLISHING;
    t->publishing++;
}

struct outbox_row *inflight_by_msg(struct inflight *t, const natsMsg *msg)
{
    struct outbox_row **p = &t->by_msg[hash_u64((uint64_t)(uintptr_t)msg, t->nbuckets)];
    for (; *p != NULL; p = &(*p)->msg_next) {
        if ((*p)->sent == msg) {
            struct outbox_row *row = *p;
            *p = row->msg_next;
            row->msg_next = NULL;
            row->sent = NULL;
            t->publishing--;
            return row;
        }
    }
    return NULL;
}

/* Unlinks row from its key queue (it must be the head) and frees an empty queue. */
static void remove_from_key(struct inflight *t, struct outbox_row *row)
{
    struct key_queue *q = row->key;
    if (q == NULL)
        return;
    row->key = NULL;
    if (row->holds_key || row->behind_failed)
        q->failed--;
    if (q->head == row) {
        q->head = row->key_next;
    } else {
        struct outbox_row *r = q->head;
        while (r->key_next != row)
            r = r->key_next;
        r->key_next = row->key_next;
        if (q->tail == row)
            q->tail = r;
    }
    row->key_next = NULL;
    if (q->head == NULL) {
        *key_slot(t, q->key) = q->next;
        free(q);
    } else if (q->head->ordering_key != q->key) {
        q->key = q->head->ordering_key; /* the borrowed name must belong to a held row */
    }
}

struct outbox_row *inflight_acked(struct inflight *t, struct outbox_row *row)
{
    struct key_queue *q = row->key;
    row->state = ROW_MARKING;
    remove_from_key(t, row);
    if (q == NULL || row->ordering_key == NULL)
        return NULL;
    struct key_queue **slot = key_slot(t, row->ordering_key);
    if (*slot == NULL || (*slot)->head->state != ROW_WAITING)
        return NULL;
    return (*slot)->head;
}

void inflight_failed(struct inflight *t, struct outbox_row *row)
{
    row->state = ROW_MARKING;
    if (!row->holds_key && row->key != NULL) {
        row->holds_key = true;
        if (!row->behind_failed)
            row->key->failed++;
    }
}

static void remove_row(struct inflight *t, struct outbox_row *row)
{
    struct outbox_row **p = &t->by_id[hash_u64((uint64_t)row->id, t->nbuckets)];
    while (*p != row)
        p = &(*p)->id_next;
    *p = row->id_next;
    if (row->sent != NULL) {
        p = &t->by_msg[hash_u64((uint64_t)(uintptr_t)row->sent, t->nbuckets)];
        while (*p != row)
            p = &(*p)->msg_next;
        *p = row->msg_next;
        t->publishing--;
    }
    if (row->all_prev != NULL)
        row->all_prev->all_next = row->all_next;
    else
        t->all = row->all_next;
    if (row->all_next != NULL)
        row->all_next->all_prev = row->all_prev;
    t->count--;
    t->bytes -= row->bytes;
}

/* Frees the WAITING rows behind row in its key; flags the others behind_failed. */
static size_t drop_behind(struct inflight *t, struct outbox_row *row)
{
    size_t dropped = 0;
    struct outbox_row *prev = row;
    while (prev->key_next != NULL) {
        struct outbox_row *next = prev->key_next;
        if (next->state == ROW_WAITING) {
            remove_from_key(t, next);
            remove_row(t, next);
            outbox_row_free(next);
            dropped++;
        } else {
            /* Publishing (pipelined) or marking: its own outcome decides. */
            if (!next->behind_failed && !next->holds_key)
                next->key->failed++;
            next->behind_failed = true;
            prev = next;
        }
    }
    return dropped;
}

void inflight_requeue(struct inflight *t, struct outbox_row *row, natsMsg *msg)
{
    natsMsg_Destroy(row->msg);
    row->msg = msg;
    row->state = ROW_WAITING;
}

size_t inflight_release(struct inflight *t, struct outbox_row *row)
{
    size_t n = 1;
    if (row->key != NULL)
        n += drop_behind(t, row);
    remove_from_key(t, row);
    remove_row(t, row);
    outbox_row_free(row);
    return n;
}

/* A waiting row without a key, or first of its key (a keyed row without a queue never goes). */
static bool ready_start(const struct outbox_row *row)
{
    if (row->state != ROW_WAITING)
        return false;
    return row->ordering_key == NULL || (row->key != NULL && row->key->head == row);
}

bool inflight_behind_failure(const struct outbox_row *row)
{
    if (row->behind_failed)
        return true;
    if (row->key == NULL || row->key->failed == 0)
        return false;
    for (const struct outbox_row *r = row->key->head; r != NULL && r != row; r = r->key_next)
        if (r->holds_key)
            return true;
    return false;
}

struct outbox_row **inflight_ready(struct inflight *t, size_t *n)
{
    *n = 0;
    size_t k = 0;
    for (struct outbox_row *row = t->all; row != NULL; row = row->all_next)
        if (ready_start(row))
            k++;
    if (k == 0)
        return NULL;
    struct outbox_row **ready = malloc(k * sizeof(*ready));
    if (ready == NULL)
        return NULL;
    for (struct outbox_row *row = t->all; row != NULL && *n < k; row = row->all_next)
        if (ready_start(row))
            ready[(*n)++] = row;
    return ready;
}

size_t inflight_recorded(struct inflight *t, struct outbox_row *row)
{
    size_t dropped = 0;
    if (row->holds_key && row->key != NULL) {
        /* Everything behind a failed head waits for a later scan, which the
         * table's per-key hold (or the resumed key) then decides. */
        dropped = drop_behind(t, row);
    }
    remove_from_key(t, row);
    remove_row(t, row);
    outbox_row_free(row);
    return dropped;
}

size_t inflight_expire(struct inflight *t, double before,
                       void (*fn)(void *arg, struct outbox_row *row), void *arg)
{
    /* Collect first: fn may record a row and drop others behind its key. */
    size_t n = 0;
    for (struct outbox_row *row = t->all; row != NULL; row = row->all_next)
        if (row->state == ROW_PUBLISHING && row->sent != NULL && row->sent_at < before)
            n++;
    if (n == 0)
        return 0;
    struct outbox_row **expired = malloc(n * sizeof(*expired));
    if (expired == NULL)
        return 0; /* try again at the next tick */
    size_t k = 0;
    for (struct outbox_row *row = t->all; row != NULL && k < n; row = row->all_next)
        if (row->state == ROW_PUBLISHING && row->sent != NULL && row->sent_at < before)
            expired[k++] = row;
    /* Oldest first (the list is newest first): a key's earliest overdue row fails first, so the
     * rows behind it see that failure and go back without an attempt of their own. Newest first,
     * every row of a pipelined key saw nothing failed ahead of it and was charged an attempt. */
    for (size_t i = k; i-- > 0;) {
        inflight_by_msg(t, expired[i]->sent);
        fn(arg, expired[i]);
    }
    free(expired);
    return k;
}

size_t inflight_drop_waiting(struct inflight *t)
{
    size_t dropped = 0;
    struct outbox_row *row = t->all;
    while (row != NULL) {
        struct outbox_row *next = row->all_next;
        if (row->state == ROW_WAITING) {
            remove_from_key(t, row);
            remove_row(t, row);
            outbox_row_free(row);
            dropped++;
        }
        row = next;
    }
    return dropped;
}

size_t inflight_drop_all(struct inflight *t)
{
    size_t n = 0;
    while (t->all != NULL) {
        struct outbox_row *row = t->all;
        remove_from_key(t, row);
        remove_row(t, row);
        outbox_row_free(row);
        n++;
    }
    return n;
}
