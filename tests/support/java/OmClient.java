import java.io.FileInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * A JSSE client that posts one outbound message the way a Java sender (Salesforce) does.
 * Usage: OmClient URL CA_PEM KEYSTORE_P12|- PASSWORD BODY_FILE
 * Prints "STATUS <code>" and the response body, or "ERROR <exception>".
 */
public class OmClient {
    public static void main(String[] args) throws Exception {
        try {
            run(args);
        } catch (Exception error) {
            System.out.println("ERROR " + error);
        }
    }

    private static void run(String[] args) throws Exception {
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        CertificateFactory factory = CertificateFactory.getInstance("X.509");
        try (InputStream in = new FileInputStream(args[1])) {
            int index = 0;
            for (Certificate certificate : factory.generateCertificates(in)) {
                trust.setCertificateEntry("ca" + index++, certificate);
            }
        }
        TrustManagerFactory trustManagers =
            TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trustManagers.init(trust);

        KeyManager[] keyManagers = null;
        if (!args[2].equals("-")) {
            char[] password = args[3].toCharArray();
            KeyStore keys = KeyStore.getInstance("PKCS12");
            try (InputStream in = new FileInputStream(args[2])) {
                keys.load(in, password);
            }
            KeyManagerFactory factoryOfKeys =
                KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            factoryOfKeys.init(keys, password);
            keyManagers = factoryOfKeys.getKeyManagers();
        }
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(keyManagers, trustManagers.getTrustManagers(), null);

        HttpsURLConnection connection = (HttpsURLConnection) new URL(args[0]).openConnection();
        connection.setSSLSocketFactory(context.getSocketFactory());
        connection.setRequestMethod("POST");
        connection.setDoOutput(true);
        connection.setRequestProperty("Content-Type", "text/xml; charset=utf-8");
        connection.setRequestProperty("SOAPAction", "\"\"");
        try (OutputStream out = connection.getOutputStream()) {
            out.write(Files.readAllBytes(Paths.get(args[4])));
        }
        int status = connection.getResponseCode();
        InputStream body = status < 400 ? connection.getInputStream() : connection.getErrorStream();
        System.out.println("STATUS " + status);
        System.out.println("CORRELATION " + connection.getHeaderField("X-Correlation-Id"));
        System.out.println(new String(body.readAllBytes(), StandardCharsets.UTF_8));
    }
}
