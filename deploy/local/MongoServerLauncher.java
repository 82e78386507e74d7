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

import java.net.InetSocketAddress;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

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

        MongoBackend backend = h2File == null ? new MemoryBackend() : new H2Backend(h2File);
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
