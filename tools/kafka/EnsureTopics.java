// Creates the cluster's topics on a local broker, as Strimzi's topic operator does from the
// KafkaTopic resources, and returns once a SCRAM-SHA-512 client sees all of them: that is when
// scripts/ensure-kafka.sh tells its caller the broker is ready.
//
//   java -cp "<kafka jars>:<this class>" EnsureTopics HOST:PORT SECONDS TOPIC=PARTITIONS...
//
// The SCRAM user and password come from KAFKA_SCRAM_USER and KAFKA_SCRAM_PASSWORD (the
// environment, not the command line, which any local user can read). Replication factor 1: the
// broker is alone. Exits 0 when every topic exists with at least its partitions, 1 if the broker
// refuses the credentials, 2 if it is not ready within SECONDS.
//
// One JVM for all topics: Kafka's own TopicCommand creates one topic per JVM start, a second
// each here.

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.TopicExistsException;

public class EnsureTopics {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: EnsureTopics HOST:PORT SECONDS TOPIC=PARTITIONS...");
            System.exit(64);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        Map<String, Integer> wanted = new LinkedHashMap<>();
        for (int i = 2; i < args.length; i++) {
            int eq = args[i].lastIndexOf('=');
            wanted.put(args[i].substring(0, eq), Integer.parseInt(args[i].substring(eq + 1)));
        }

        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(AdminClientConfig.SECURITY_PROTOCOL_CONFIG, "SASL_PLAINTEXT");
        config.put("sasl.mechanism", "SCRAM-SHA-512");
        config.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username="
                + jaasQuoted(env("KAFKA_SCRAM_USER")) + " password=" + jaasQuoted(env("KAFKA_SCRAM_PASSWORD")) + ";");
        // Short per-call timeouts: a broker still starting is asked again, until the deadline.
        config.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        config.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        config.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");

        try (Admin admin = Admin.create(config)) {
            Throwable last = null;
            while (System.nanoTime() < deadline) {
                try {
                    if (ensure(admin, wanted)) {
                        System.exit(0);
                    }
                } catch (ExecutionException e) {
                    last = e.getCause();
                } catch (org.apache.kafka.common.KafkaException e) {
                    last = e;
                }
                if (last instanceof AuthenticationException) {
                    // Asking again does not help: the broker has another password for the user.
                    System.err.println("EnsureTopics: the broker at " + bootstrap + " refuses "
                            + env("KAFKA_SCRAM_USER") + ": " + last.getMessage());
                    System.exit(1);
                }
                Thread.sleep(200);
            }
            System.err.println("EnsureTopics: the topics are not all there on " + bootstrap + " in time"
                    + (last == null ? "" : ": " + last));
            System.exit(2);
        }
    }

    /** One round: creates or grows what is missing; true once every topic is as wanted. */
    private static boolean ensure(Admin admin, Map<String, Integer> wanted) throws Exception {
        Set<String> existing = admin.listTopics().names().get();
        List<NewTopic> missing = new ArrayList<>();
        for (Map.Entry<String, Integer> topic : wanted.entrySet()) {
            if (!existing.contains(topic.getKey())) {
                missing.add(new NewTopic(topic.getKey(), topic.getValue(), (short) 1));
            }
        }
        if (!missing.isEmpty()) {
            admin.createTopics(missing).values().forEach((name, created) -> {
                try {
                    created.get();
                } catch (ExecutionException e) {
                    // Created by an earlier round whose answer was lost: fine.
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        throw new org.apache.kafka.common.KafkaException(name + ": " + e.getCause(), e.getCause());
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new org.apache.kafka.common.KafkaException(e);
                }
            });
            System.err.println("EnsureTopics: created " + missing.size() + " topic(s)");
        }

        // The broker answers a describe from its metadata cache, which lags the controller for
        // a moment: a topic created just now may be unknown there yet (the next round sees it).
        Map<String, TopicDescription> described = admin.describeTopics(wanted.keySet()).allTopicNames().get();
        Map<String, NewPartitions> grow = new HashMap<>();
        for (Map.Entry<String, Integer> topic : wanted.entrySet()) {
            int has = described.get(topic.getKey()).partitions().size();
            if (has < topic.getValue()) {
                // A manifest that raised the count, over storage kept from before: as Strimzi does.
                grow.put(topic.getKey(), NewPartitions.increaseTo(topic.getValue()));
            } else if (has > topic.getValue()) {
                System.err.println("EnsureTopics: warning: " + topic.getKey() + " has " + has + " partitions, "
                        + topic.getValue() + " wanted (Kafka cannot remove partitions)");
            }
        }
        if (!grow.isEmpty()) {
            admin.createPartitions(grow).all().get();
            System.err.println("EnsureTopics: added partitions to " + grow.keySet());
            return false;
        }

        Set<String> extra = new TreeSet<>(existing);
        extra.removeAll(wanted.keySet());
        extra.removeIf(name -> name.startsWith("__"));
        if (!extra.isEmpty()) {
            System.err.println("EnsureTopics: warning: topics not in the manifests: " + extra);
        }
        return true;
    }

    private static String env(String name) {
        String value = System.getenv(name);
        if (value == null || value.isEmpty()) {
            System.err.println("EnsureTopics: " + name + " is not set");
            System.exit(64);
        }
        return value;
    }

    /** A JAAS option value: double-quoted, with backslash and quote escaped. */
    private static String jaasQuoted(String value) {
        return '"' + value.replace("\\", "\\\\").replace("\"", "\\\"") + '"';
    }
}
