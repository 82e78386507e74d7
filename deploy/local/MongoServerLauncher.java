// Single-file launcher for mongo-java-server 1.47.0 (Java 11+ source-file mode, nothing to
// compile ahead of time):
//
//   java -cp '<jardir>/*' [-Dlog4j2.configurationFile=deploy/local/log4j2.yaml] \
//        deploy/local/MongoServerLauncher.java <host> <port> [<h2-file-path>]
//
// * MemoryBackend by default; H2Backend (MVStore file, created if missing) when a path is given.
// * Oplog enabled, so change streams (collection.watch()) work.
// * Reports MongoDB 6.0.0 / maxWireVersion 17 (the library's newest built-in ServerVersion is
//   MONGO_5_0 = wire 8, which PyMongo >= 4.19 rejects: it requires wire >= 9).
// * Port 0 binds an ephemeral port; the READY line carries the real one.
// * Prints exactly one line "READY mongo <host>:<port>" to stdout once the socket is listening.
//   Logging (slf4j -> log4j2) goes to stderr when deploy/local/log4j2.yaml is used.
// * SIGTERM/SIGINT: shutdown hook closes clients, stops the event loops, closes the backend
//   (for H2 this flushes the MVStore file), then the JVM exits 143/130.
// * Exit code 2 on bad usage, 1 when binding fails (e.g. port in use).
// * The oplog is the launcher's BoundedOplog, not the library's CollectionBackedOplog:
//   - bounded: past -Dsm.oplog.maxEntries entries (default 5,000,000) the oldest are dropped,
//     and a change stream that starts or resumes before the oldest kept entry fails with
//     ChangeStreamHistoryLost (286), as MongoDB does once a position has left its oplog;
//   - indexed by time: a getMore reads only the entries after the cursor's position
//     (the library re-scans and re-sorts the whole oplog collection on every getMore, so an
//     idle change stream's cost grew with the oplog), and updateLookup finds the document by
//     its _id index (the library scanned the whole collection per update event);
//   - no event for a document an insert rejected (the library logs every document of the
//     insert command, so a duplicate-key insert produced a phantom insert event);
//   - otherwise the events are the library's, field for field (its deviations from MongoDB
//     are stated by tests/integration/test_mongodb_semantics.py);
//   - local.oplog.rs still holds every kept entry (tools read it), trimmed with the bound.
//   -Dsm.oplog.impl=library selects the library's oplog instead (for A/B measurements).
//   - change-stream replies carry postBatchResumeToken (MongoDB's since 4.0.7): on an empty
//     batch it is the newest oplog entry's time, so an idle stream's resume token advances;
//   buildInfo carries "smStandIn": {"oplog": <impl>, "oplogMaxEntries": <n>,
//   "postBatchResumeToken": <bool>} so tests can tell.

import java.net.InetSocketAddress;
import java.time.Clock;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.AbstractMongoBackend;
import de.bwaldvogel.mongo.backend.Cursor;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.aggregation.Aggregation;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.exception.MongoServerError;
import de.bwaldvogel.mongo.oplog.Oplog;
import de.bwaldvogel.mongo.oplog.OplogPosition;
import de.bwaldvogel.mongo.backend.AbstractCursor;
import io.netty.channel.Channel;

public class MongoServerLauncher {

    /** MongoDB 6.0 as seen by drivers: buildInfo.version "6.0.0", hello/isMaster maxWireVersion 17. */
    static final class Mongo60 implements MongoVersion {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(6, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 17;
        }
    }

    /** Default bound of the oplog, in entries: large, so only a test that asks for less drops any. */
    static final long DEFAULT_OPLOG_MAX_ENTRIES = 5_000_000L;

    static String oplogImpl() {
        String impl = System.getProperty("sm.oplog.impl", "bounded");
        if (!impl.equals("bounded") && !impl.equals("library")) {
            System.err.println("invalid -Dsm.oplog.impl=" + impl + ": use 'bounded' (default) or 'library'");
            System.exit(2);
        }
        return impl;
    }

    static long oplogMaxEntries() {
        String value = System.getProperty("sm.oplog.maxEntries", Long.toString(DEFAULT_OPLOG_MAX_ENTRIES));
        try {
            long max = Long.parseLong(value.replace("_", ""));
            if (max >= 1) {
                return max;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        System.err.println("invalid -Dsm.oplog.maxEntries=" + value + ": give a whole number of entries >= 1");
        System.exit(2);
        return 0;
    }

    /** The oplog this launcher installs (see the header); null means the library's own. */
    static Oplog createOplog(MongoBackend backend, CursorRegistry cursors) {
        if (oplogImpl().equals("library")) {
            return null;
        }
        MongoDatabase local = backend.resolveDatabase("local");
        @SuppressWarnings("unchecked")
        MongoCollection<Document> collection = (MongoCollection<Document>) local.resolveCollection("oplog.rs", false);
        if (collection == null) {
            @SuppressWarnings("unchecked")
            MongoCollection<Document> created = (MongoCollection<Document>) local.createCollectionOrThrowIfExists("oplog.rs");
            collection = created;
        }
        return new BoundedOplog(backend, collection, cursors, oplogMaxEntries());
    }

    /**
     * buildInfo plus "smStandIn" (so a test can tell this launcher's oplog from the library's), and
     * a change stream's aggregate/getMore reply plus its postBatchResumeToken (BoundedOplog only).
     */
    static Document extendReply(CursorRegistry cursors, String command, Document response) {
        if (command.equalsIgnoreCase("buildinfo")) {
            boolean bounded = oplogImpl().equals("bounded");
            response.put("smStandIn", new Document("oplog", oplogImpl())
                .append("oplogMaxEntries", oplogMaxEntries())
                .append("postBatchResumeToken", bounded));
        } else if (command.equalsIgnoreCase("getMore") || command.equalsIgnoreCase("aggregate")) {
            Object cursorReply = response.get("cursor");
            if (cursorReply instanceof Document && ((Document) cursorReply).get("id") instanceof Number) {
                long id = ((Number) ((Document) cursorReply).get("id")).longValue();
                Cursor cursor = null;
                if (id != 0) {
                    try {
                        cursor = cursors.getCursor(id);
                    } catch (RuntimeException e) {
                        // not (or no longer) a cursor: nothing to add
                    }
                }
                if (cursor instanceof BoundedOplog.StreamCursor) {
                    long token = ((BoundedOplog.StreamCursor) cursor).postBatchToken();
                    ((Document) cursorReply).put("postBatchResumeToken", new Document("_data", Long.toHexString(token)));
                }
            }
        }
        return response;
    }

    static final class LauncherMemoryBackend extends MemoryBackend {
        @Override
        protected Oplog createOplog() {
            Oplog oplog = MongoServerLauncher.createOplog(this, getCursorRegistry());
            return oplog != null ? oplog : super.createOplog();
        }

        @Override
        public Document handleCommand(Channel channel, String databaseName, String command, Document query) {
            return extendReply(getCursorRegistry(), command, super.handleCommand(channel, databaseName, command, query));
        }
    }

    static final class LauncherH2Backend extends H2Backend {
        LauncherH2Backend(String fileName) {
            super(fileName);
        }

        @Override
        protected Oplog createOplog() {
            Oplog oplog = MongoServerLauncher.createOplog(this, getCursorRegistry());
            return oplog != null ? oplog : super.createOplog();
        }

        @Override
        public Document handleCommand(Channel channel, String databaseName, String command, Document query) {
            return extendReply(getCursorRegistry(), command, super.handleCommand(channel, databaseName, command, query));
        }
    }

    /** The change event that ends a stream resumed after a drop (the library's class is package-private). */
    static final class InvalidateCursor extends AbstractCursor {
        private final long position;

        InvalidateCursor(long position) {
            super(0);
            this.position = position;
        }

        @Override
        public boolean isEmpty() {
            return false;
        }

        @Override
        public List<Document> takeDocuments(int numberToReturn) {
            return List.of(new Document("_id", new Document("_data", Long.toHexString(position)))
                .append("operationType", "invalidate"));
        }
    }

    /**
     * The library's oplog, with the same entries and the same change events, but kept in a map
     * ordered by timestamp (a getMore costs O(log n + events returned), not a scan and sort of
     * the whole oplog) and bounded: past maxEntries the oldest entries go, and a stream that
     * would start before the oldest kept entry fails with ChangeStreamHistoryLost (286).
     */
    static final class BoundedOplog implements Oplog {
        private static final int HISTORY_LOST = 286;

        private final MongoBackend backend;
        private final MongoCollection<Document> collection;
        private final CursorRegistry cursorRegistry;
        private final Clock clock;
        private final long maxEntries;
        private final UUID ui = UUID.randomUUID();
        /** ts value -> the entry, the same Document instance local.oplog.rs holds. */
        private final ConcurrentSkipListMap<Long, Document> entries = new ConcurrentSkipListMap<>();
        private long size;
        private int increment;
        private long lastTs;
        /** Every entry with a ts after this value is still kept (writes: under this's lock). */
        private volatile long horizon;

        BoundedOplog(MongoBackend backend, MongoCollection<Document> collection, CursorRegistry cursorRegistry,
                     long maxEntries) {
            this.backend = backend;
            this.collection = collection;
            this.cursorRegistry = cursorRegistry;
            this.clock = backend.getClock();
            this.maxEntries = maxEntries;
            // An H2 file brings the entries of earlier runs: history starts at the oldest of them.
            collection.queryAllAsStream().forEach(d -> entries.put(ts(d).getValue(), d));
            size = entries.size();
            lastTs = entries.isEmpty() ? 0 : entries.lastKey();
            // Nothing happened before the server started: a fresh oplog's history begins now.
            long start = new BsonTimestamp(clock.instant(), 0).getValue();
            horizon = entries.isEmpty() ? start - 1 : entries.firstKey() - 1;
            synchronized (this) {
                trim();
            }
        }

        private static BsonTimestamp ts(Document entry) {
            return (BsonTimestamp) entry.get("ts");
        }

        private static String database(String namespace) {
            return namespace.substring(0, namespace.indexOf('.'));
        }

        private static String collectionName(String namespace) {
            return namespace.substring(namespace.indexOf('.') + 1);
        }

        private boolean isOplog(String namespace) {
            return collection.getFullName().equals(namespace);
        }

        /** Timestamp(seconds, increment) like the library's OplogClock, never going backwards. */
        private BsonTimestamp nextTimestamp() {
            long candidate = new BsonTimestamp(clock.instant(), ++increment).getValue();
            lastTs = Math.max(candidate, lastTs + 1);
            return new BsonTimestamp(lastTs);
        }

        private Document entry(String op, String namespace) {
            return new Document()
                .append("ts", nextTimestamp())
                .append("t", 1L)
                .append("h", 0L)
                .append("v", 2L)
                .append("op", op)
                .append("ns", namespace)
                .append("ui", ui)
                .append("wall", clock.instant());
        }

        private synchronized void append(List<Document> added) {
            for (Document entry : added) {
                collection.addDocument(entry);
                entries.put(ts(entry).getValue(), entry);
                size++;
            }
            trim();
        }

        /** Drop the oldest entries past the bound; the horizon moves to the newest one dropped. */
        private void trim() {
            while (size > maxEntries) {
                Map.Entry<Long, Document> oldest = entries.pollFirstEntry();
                if (oldest == null) {
                    size = 0;
                    return;
                }
                size--;
                horizon = oldest.getKey();
                collection.removeDocument(oldest.getValue());
            }
        }

        @Override
        public void handleInsert(String namespace, List<Document> documents) {
            if (isOplog(namespace)) {
                return;
            }
            // The library passes every document of the insert command, also those it rejected
            // (duplicate key) or never tried (after an ordered batch's first error): only a
            // document the collection now holds was inserted, so only it becomes an event.
            MongoCollection<?> target = backend.resolveDatabase(database(namespace))
                .resolveCollection(collectionName(namespace), false);
            // Which documents were inserted is asked of the collection BEFORE taking this
            // oplog's lock: an update holds its collection's lock and then takes this one,
            // so querying the collection while holding it deadlocked the server (seen in CI).
            List<Document> inserted = new ArrayList<>();
            for (Document document : documents) {
                if (target == null || holds(target, document)) {
                    inserted.add(document);
                }
            }
            List<Document> added = new ArrayList<>();
            synchronized (this) {
                for (Document document : inserted) {
                    added.add(entry("i", namespace).append("o", document.cloneDeeply()));
                }
                append(added);
            }
        }

        /** The collection holds exactly this document under its _id (found by the _id index). */
        private static boolean holds(MongoCollection<?> collection, Document document) {
            if (!document.containsKey("_id")) {
                return false;
            }
            Iterator<Document> found = collection.handleQuery(new Document("_id", document.get("_id")), 0, 1).iterator();
            return found.hasNext() && found.next().equals(document);
        }

        @Override
        public void handleUpdate(String namespace, Document selector, Document query, List<Object> modifiedIds) {
            if (isOplog(namespace)) {
                return;
            }
            List<Document> added = new ArrayList<>();
            synchronized (this) {
                for (Object id : modifiedIds) {
                    added.add(entry("u", namespace).append("o", query).append("o2", new Document("_id", id)));
                }
                append(added);
            }
        }

        @Override
        public void handleDelete(String namespace, Document query, List<Object> deletedIds) {
            if (isOplog(namespace)) {
                return;
            }
            List<Document> added = new ArrayList<>();
            synchronized (this) {
                for (Object id : deletedIds) {
                    added.add(entry("d", namespace).append("o", new Document("_id", id)));
                }
                append(added);
            }
        }

        @Override
        public void handleDropCollection(String namespace) {
            if (isOplog(namespace)) {
                return;
            }
            synchronized (this) {
                append(List.of(entry("c", database(namespace) + ".$cmd")
                    .append("o", new Document("drop", collectionName(namespace)))));
            }
        }

        @Override
        public Cursor createCursor(Document changeStream, String namespace, Aggregation aggregation) {
            Document startAfter = (Document) changeStream.get("startAfter");
            Document resumeAfter = (Document) changeStream.get("resumeAfter");
            BsonTimestamp startAt = (BsonTimestamp) changeStream.get("startAtOperationTime");
            OplogPosition position;
            if (startAfter != null || resumeAfter != null) {
                Document token = startAfter != null ? startAfter : resumeAfter;
                position = OplogPosition.fromDocument(token);
                long after = Long.parseLong((String) token.get("_data"), 16);
                // Resuming after p needs every entry after p: lost once an entry after p was dropped.
                if (after < horizon) {
                    throw historyLost(new BsonTimestamp(after));
                }
                if (resumeAfter != null && resumesAfterDrop(namespace, after)) {
                    return new InvalidateCursor(after);
                }
            } else if (startAt != null) {
                // Starting at t needs every entry from t on: lost once the entry at t or later was dropped.
                if (startAt.getValue() <= horizon) {
                    throw historyLost(startAt);
                }
                position = new OplogPosition(startAt).inclusive();
            } else {
                synchronized (this) {
                    long now = new BsonTimestamp(clock.instant(), increment).getValue();
                    position = new OplogPosition(new BsonTimestamp(Math.max(now, lastTs)));
                }
            }
            long at = Long.parseLong(position.toHexString(), 16);
            boolean inclusive = startAfter == null && resumeAfter == null && startAt != null;
            StreamCursor cursor = new StreamCursor(cursorRegistry.generateCursorId(), changeStream, namespace,
                aggregation, inclusive ? at - 1 : at);
            cursorRegistry.add(cursor);
            return cursor;
        }

        /**
         * A change stream's cursor. A batch reads the entries after its position up to the newest
         * one in the oplog when the batch starts (later entries get later timestamps), and its
         * postBatchResumeToken is where the next batch starts: the last event returned when the
         * batch filled up, else that newest entry, so on a quiet collection it follows the oplog.
         */
        final class StreamCursor extends AbstractCursor {
            private final Document changeStream;
            private final String namespace;
            private final Aggregation aggregation;
            /** Every entry up to this timestamp value has been delivered (or did not match). */
            private volatile long after;

            StreamCursor(long id, Document changeStream, String namespace, Aggregation aggregation, long after) {
                super(id);
                this.changeStream = changeStream;
                this.namespace = namespace;
                this.aggregation = aggregation;
                this.after = after;
            }

            long postBatchToken() {
                return after;
            }

            @Override
            public boolean isEmpty() {
                return false;
            }

            @Override
            public synchronized List<Document> takeDocuments(int numberToReturn) {
                Long newest = entries.isEmpty() ? null : entries.lastKey();
                if (newest == null || newest <= after) {
                    return new ArrayList<>();
                }
                Stream<Document> events = aggregation.runStagesAsStream(entries.subMap(after, false, newest, true)
                    .values().stream()
                    .filter(e -> matchesNamespace(e, namespace))
                    .map(e -> toEvent(e, changeStream)));
                if (numberToReturn > 0) {
                    events = events.limit(numberToReturn);
                }
                List<Document> batch = events.collect(Collectors.toList());
                if (numberToReturn > 0 && batch.size() == numberToReturn) {
                    Object id = batch.get(batch.size() - 1).get("_id");
                    if (id instanceof Document && ((Document) id).get("_data") instanceof String) {
                        after = Long.parseLong((String) ((Document) id).get("_data"), 16);
                    }
                } else {
                    after = Math.max(after, newest);
                }
                return batch;
            }
        }

        private MongoServerError historyLost(BsonTimestamp from) {
            return new MongoServerError(HISTORY_LOST, "ChangeStreamHistoryLost",
                "Resume of change stream was not possible, as the resume point may no longer be in the oplog "
                    + "(asked for " + show(from) + "; kept: the entries after " + show(new BsonTimestamp(horizon))
                    + "; bound -Dsm.oplog.maxEntries=" + maxEntries + ")");
        }

        private static String show(BsonTimestamp t) {
            return "Timestamp(" + Integer.toUnsignedString(t.getTime()) + ", " + Integer.toUnsignedString(t.getInc()) + ")";
        }

        /** The library's rule: a resumeAfter at or after a drop of the collection invalidates. */
        private boolean resumesAfterDrop(String namespace, long after) {
            String commands = database(namespace) + ".$cmd";
            Document drop = new Document("drop", collectionName(namespace));
            return entries.headMap(after, true).values().stream()
                .anyMatch(e -> "c".equals(e.get("op")) && commands.equals(e.get("ns")) && drop.equals(e.get("o")));
        }

        private static boolean matchesNamespace(Document entry, String namespace) {
            String ns = (String) entry.get("ns");
            return ns.equals(namespace)
                || (database(namespace).equals(database(ns)) && collectionName(ns).equals("$cmd"));
        }

        private Document toEvent(Document entry, Document changeStream) {
            String op = (String) entry.get("op");
            Document o = (Document) entry.get("o");
            BsonTimestamp timestamp = ts(entry);
            Document id = new Document("_data", Long.toHexString(timestamp.getValue()));
            if (op.equals("c")) {
                String type = o.keySet().iterator().next();
                return new Document().append("_id", id).append("operationType", type).append("clusterTime", timestamp);
            }
            Document documentKey;
            Document fullDocument;
            String type;
            switch (op) {
                case "i":
                    type = "insert";
                    documentKey = new Document("_id", o.get("_id"));
                    fullDocument = o;
                    break;
                case "d":
                    type = "delete";
                    documentKey = o;
                    fullDocument = null;
                    break;
                case "u":
                    type = "update";
                    documentKey = o;  // as the library: the update spec stands in for the key
                    fullDocument = lookUp(changeStream, entry);
                    break;
                default:
                    throw new IllegalArgumentException("unexpected oplog op: " + op);
            }
            return new Document()
                .append("_id", id)
                .append("operationType", type)
                .append("fullDocument", fullDocument)
                .append("documentKey", documentKey)
                .append("clusterTime", timestamp);
        }

        /** As the library: the current document by _id (now via the _id index), else the $set/$unset delta. */
        private Document lookUp(Document changeStream, Document entry) {
            Document update = (Document) entry.get("o");
            Document delta = new Document();
            if (update.containsKey("$set")) {
                delta.appendAll((Document) update.get("$set"));
            }
            if (update.containsKey("$unset")) {
                delta.appendAll((Document) update.get("$unset"));
            }
            if (!"updateLookup".equals(changeStream.get("fullDocument"))) {
                return delta;
            }
            String ns = (String) entry.get("ns");
            MongoCollection<?> source = backend.resolveDatabase(database(ns)).resolveCollection(collectionName(ns), false);
            if (source == null) {
                return delta;
            }
            Object key = ((Document) entry.get("o2")).get("_id");
            Iterator<Document> found = source.handleQuery(new Document("_id", key), 0, 1).iterator();
            return found.hasNext() ? found.next() : delta;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: MongoServerLauncher <host> <port> [<h2-file-path>]");
            System.exit(2);
        }
        String host = args[0];
        int port;
        try {
            port = Integer.parseInt(args[1]);
        } catch (NumberFormatException e) {
            System.err.println("invalid port: " + args[1]);
            System.exit(2);
            return;
        }
        String h2File = args.length == 3 ? args[2] : null;

        MongoBackend backend = h2File == null ? new LauncherMemoryBackend() : new LauncherH2Backend(h2File);
        backend.version(new Mongo60());

        MongoServer server = new MongoServer(backend);
        server.enableOplog();

        try {
            server.bind(host, port);
        } catch (Exception e) {
            // Netty rethrows the checked java.net.BindException ("Address already in use")
            // sneakily, and MongoServer.bind only cleans up on RuntimeException: without
            // System.exit the non-daemon event-loop threads would keep the JVM alive.
            System.err.println("FAILED mongo " + host + ":" + port + ": " + e);
            try {
                server.shutdownNow();
            } catch (RuntimeException ignored) {
                // best effort
            }
            System.exit(1);
            return;
        }

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                // shutdownNow(): also closes connected clients (e.g. a driver blocked in an
                // awaitData getMore); shutdown() would wait for them to disconnect.
                server.shutdownNow();
            } catch (RuntimeException e) {
                System.err.println("error during shutdown: " + e);
            } finally {
                stopped.countDown();
            }
        }, "mongo-launcher-shutdown"));

        InetSocketAddress bound = server.getLocalAddress();
        System.out.println("READY mongo " + host + ":" + bound.getPort());
        System.out.flush();

        stopped.await();
    }
}
