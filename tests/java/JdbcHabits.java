import java.sql.*;
import java.util.*;

/**
 * What applications on pgjdbc send, one step per line ("name: answer"): pipelined batches (and
 * the driver's rewrite of them into one multi-row INSERT), server-side prepared statements once
 * a statement has run five times (binary results), array parameters, generated keys, explicit
 * transactions with savepoints, cursor-mode fetches (fetchSize), a query timeout (a cancel
 * request), errors with their SQLSTATE, several statements in one execute, DatabaseMetaData and
 * ResultSetMetaData (which look tables up by OID), setMaxRows over a merged order, an updatable
 * result set, a batch failing on its second row, isolation levels, read-only transactions,
 * parameter types, a CallableStatement, and a batch into a table whose serial key the proxy
 * fills, with the keys it returns, and a batch of literal statements. tests/clients.rs runs it
 * through the proxy and against one PostgreSQL database, and compares the two outputs.
 *
 *   java -cp postgresql.jar JdbcHabits.java JDBC_URL USER PASSWORD [reWriteBatchedInserts]
 */
public class JdbcHabits {
    static void p(String s) { System.out.println(s); }
    /** One step's answer, or the exception it ended in (the Rust test fails on those). */
    static void step(String name, Callable c) {
        try { p(name + ": " + c.call()); }
        catch (Exception e) { p(name + ": EXCEPTION " + e.toString().replace('\n', ' ')); }
    }
    interface Callable { Object call() throws Exception; }
    public static void main(String[] a) throws Exception {
        String url = a[0];
        Properties props = new Properties();
        props.setProperty("user", a[1]); props.setProperty("password", a[2]);
        if (a.length > 3) props.setProperty("reWriteBatchedInserts", a[3]);
        // Leave the server's text as it is: the proxy and PostgreSQL must give the same.
        props.setProperty("ApplicationName", "jdbc-habits");
        Connection c = DriverManager.getConnection(url, props);
        Statement st = c.createStatement();
        st.execute("create table jdbc_items (id bigint primary key, name text, qty int, made timestamptz default now(), tags text[])");
        st.execute("create table jdbc_codes (code text primary key, label text)");
        step("batch", () -> {
            PreparedStatement ps = c.prepareStatement("insert into jdbc_items (id, name, qty) values (?, ?, ?)");
            for (int i = 1; i <= 60; i++) { ps.setLong(1, i); ps.setString(2, "n" + i); ps.setInt(3, i % 7); ps.addBatch(); }
            return Arrays.toString(ps.executeBatch()).length();
        });
        step("count", () -> { ResultSet r = st.executeQuery("select count(*), sum(qty) from jdbc_items"); r.next(); return r.getLong(1) + "/" + r.getLong(2); });
        step("point x10", () -> {
            PreparedStatement ps = c.prepareStatement("select name, qty, made from jdbc_items where id = ?");
            StringBuilder sb = new StringBuilder();
            for (int i = 1; i <= 10; i++) { ps.setLong(1, i); ResultSet r = ps.executeQuery(); r.next(); sb.append(r.getString(1)).append(r.getInt(2)).append(r.getTimestamp(3) != null ? "t" : "x").append(','); }
            return sb;
        });
        step("any array", () -> {
            PreparedStatement ps = c.prepareStatement("select count(*) from jdbc_items where id = any(?)");
            ps.setArray(1, c.createArrayOf("bigint", new Long[]{1L, 2L, 3L, 40L, 99L}));
            ResultSet r = ps.executeQuery(); r.next(); return r.getLong(1);
        });
        step("order by limit x7", () -> {
            PreparedStatement ps = c.prepareStatement("select id from jdbc_items where qty = ? order by id desc limit 3");
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < 7; i++) { ps.setInt(1, i); ResultSet r = ps.executeQuery(); while (r.next()) sb.append(r.getLong(1)).append(' '); sb.append('|'); }
            return sb;
        });
        step("generated keys", () -> {
            PreparedStatement ps = c.prepareStatement("insert into jdbc_items (id, name) values (?, ?)", Statement.RETURN_GENERATED_KEYS);
            ps.setLong(1, 100); ps.setString(2, "hundred"); ps.executeUpdate();
            ResultSet r = ps.getGeneratedKeys(); r.next(); return r.getLong("id") + " " + r.getString("name");
        });
        step("txn commit", () -> {
            c.setAutoCommit(false);
            PreparedStatement ps = c.prepareStatement("update jdbc_items set qty = qty + 100 where id = ?");
            for (long id : new long[]{1, 2, 3, 4, 5}) { ps.setLong(1, id); ps.executeUpdate(); }
            c.commit(); c.setAutoCommit(true);
            ResultSet r = st.executeQuery("select sum(qty) from jdbc_items where id <= 5"); r.next(); return r.getLong(1);
        });
        step("txn rollback + savepoint", () -> {
            c.setAutoCommit(false);
            st.executeUpdate("update jdbc_items set qty = 0 where id = 6");
            Savepoint sp = c.setSavepoint();
            st.executeUpdate("update jdbc_items set qty = 0 where id = 7");
            c.rollback(sp);
            st.executeUpdate("update jdbc_items set qty = 0 where id = 8");
            c.commit(); c.setAutoCommit(true);
            ResultSet r = st.executeQuery("select string_agg(id||'='||qty, ',' order by id) from jdbc_items where id between 6 and 8"); r.next(); return r.getString(1);
        });
        step("fetch size", () -> {
            c.setAutoCommit(false);
            PreparedStatement ps = c.prepareStatement("select id from jdbc_items where qty >= ? order by id");
            ps.setFetchSize(7); ps.setInt(1, 0);
            ResultSet r = ps.executeQuery(); long n = 0, sum = 0; while (r.next()) { n++; sum += r.getLong(1); }
            c.commit(); c.setAutoCommit(true);
            return n + "/" + sum;
        });
        step("fetch size unordered", () -> {
            c.setAutoCommit(false);
            PreparedStatement ps = c.prepareStatement("select id from jdbc_items");
            ps.setFetchSize(5);
            ResultSet r = ps.executeQuery(); long n = 0, sum = 0; while (r.next()) { n++; sum += r.getLong(1); }
            c.commit(); c.setAutoCommit(true);
            return n + "/" + sum;
        });
        step("dup key", () -> {
            try { st.executeUpdate("insert into jdbc_items (id) values (1)"); return "no error"; }
            catch (SQLException e) { return e.getSQLState(); }
        });
        step("after error", () -> { ResultSet r = st.executeQuery("select count(*) from jdbc_items"); r.next(); return r.getLong(1); });
        step("two statements", () -> {
            boolean b = st.execute("update jdbc_items set name = 'm' where id = 9; select name from jdbc_items where id = 9");
            int n = 0; StringBuilder sb = new StringBuilder();
            do { if (st.getResultSet() != null) { ResultSet r = st.getResultSet(); while (r.next()) sb.append(r.getString(1)); } else if (st.getUpdateCount() == -1) break; else sb.append("u" + st.getUpdateCount()); } while (st.getMoreResults() || st.getUpdateCount() != -1);
            return sb;
        });
        step("metadata tables", () -> {
            ResultSet r = c.getMetaData().getTables(null, "public", "j%", new String[]{"TABLE"}); List<String> l = new ArrayList<>(); while (r.next()) l.add(r.getString("TABLE_NAME")); return l;
        });
        step("metadata columns", () -> {
            ResultSet r = c.getMetaData().getColumns(null, "public", "jdbc_items", null); List<String> l = new ArrayList<>(); while (r.next()) l.add(r.getString("COLUMN_NAME") + ":" + r.getString("TYPE_NAME")); return l;
        });
        step("metadata pk", () -> {
            ResultSet r = c.getMetaData().getPrimaryKeys(null, "public", "jdbc_items"); List<String> l = new ArrayList<>(); while (r.next()) l.add(r.getString("COLUMN_NAME")); return l;
        });
        step("rsmd", () -> {
            ResultSet r = st.executeQuery("select id, name from jdbc_items where id = 1"); ResultSetMetaData m = r.getMetaData();
            return m.getColumnCount() + " " + m.getTableName(1) + " " + m.isNullable(1) + " " + m.getColumnTypeName(2);
        });
        step("group by", () -> {
            ResultSet r = st.executeQuery("select qty % 3, count(*), avg(qty) from jdbc_items group by 1 order by 1"); StringBuilder sb = new StringBuilder(); while (r.next()) sb.append(r.getInt(1) + ":" + r.getLong(2) + ":" + r.getBigDecimal(3) + " "); return sb;
        });
        step("isolation RR", () -> {
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            c.setAutoCommit(false);
            ResultSet r = st.executeQuery("select count(*) from jdbc_items"); r.next(); long n = r.getLong(1);
            ResultSet r2 = st.executeQuery("show transaction_isolation"); r2.next();
            c.commit(); c.setAutoCommit(true);
            c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
            return n + " " + r2.getString(1);
        });
        step("read only", () -> {
            c.setReadOnly(true); c.setAutoCommit(false);
            String res;
            try { st.executeUpdate("update jdbc_items set qty = 1 where id = 1"); res = "wrote"; } catch (SQLException e) { res = e.getSQLState(); }
            c.rollback(); c.setAutoCommit(true); c.setReadOnly(false);
            return res;
        });
        step("types", () -> {
            PreparedStatement ps = c.prepareStatement("select ?::numeric + 1, ?::timestamptz, ?::uuid, ?::jsonb, ?::date");
            ps.setBigDecimal(1, new java.math.BigDecimal("1.25")); ps.setTimestamp(2, Timestamp.valueOf("2020-01-02 03:04:05")); ps.setObject(3, UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")); ps.setString(4, "{\"a\":1}"); ps.setDate(5, java.sql.Date.valueOf("2021-02-03"));
            ResultSet r = ps.executeQuery(); r.next(); return r.getBigDecimal(1) + " " + r.getString(3) + " " + r.getString(4) + " " + r.getDate(5);
        });
        step("callable", () -> {
            CallableStatement cs = c.prepareCall("{? = call upper(?)}"); cs.registerOutParameter(1, Types.VARCHAR); cs.setString(2, "abc"); cs.execute(); return cs.getString(1);
        });
        step("ref batch", () -> {
            PreparedStatement ps = c.prepareStatement("insert into jdbc_codes values (?, ?)");
            for (int i = 0; i < 5; i++) { ps.setString(1, "c" + i); ps.setString(2, "l" + i); ps.addBatch(); }
            return Arrays.toString(ps.executeBatch());
        });
        step("query timeout", () -> {
            PreparedStatement ps = c.prepareStatement("select pg_sleep(5) from jdbc_items where id < 3");
            ps.setQueryTimeout(1);
            try { ps.executeQuery(); return "not cancelled"; } catch (SQLException e) { return e.getSQLState(); }
        });
        step("after cancel", () -> { ResultSet r = st.executeQuery("select count(*) from jdbc_items where id < 3"); r.next(); return r.getLong(1); });
        step("maxRows, merged order", () -> {
            Statement s = c.createStatement(); s.setMaxRows(4);
            ResultSet r = s.executeQuery("select id from jdbc_items order by id desc");
            StringBuilder sb = new StringBuilder(); while (r.next()) sb.append(r.getLong(1)).append(' '); return sb;
        });
        step("maxRows, prepared x6", () -> {
            PreparedStatement s = c.prepareStatement("select id from jdbc_items where qty = ? order by id"); s.setMaxRows(2);
            StringBuilder sb = new StringBuilder();
            for (int i = 0; i < 6; i++) { s.setInt(1, i); ResultSet r = s.executeQuery(); while (r.next()) sb.append(r.getLong(1)).append(' '); sb.append('|'); }
            return sb;
        });
        step("parameter metadata", () -> {
            ParameterMetaData m = c.prepareStatement("select name from jdbc_items where id = ? and qty > ?").getParameterMetaData();
            return m.getParameterCount() + " " + m.getParameterTypeName(1) + " " + m.getParameterTypeName(2);
        });
        step("updatable result set", () -> {
            Statement s = c.createStatement(ResultSet.TYPE_SCROLL_INSENSITIVE, ResultSet.CONCUR_UPDATABLE);
            ResultSet r = s.executeQuery("select id, name, qty from jdbc_items where id = 10");
            r.next(); r.updateString("name", "ten"); r.updateRow();
            r.moveToInsertRow(); r.updateLong("id", 1000); r.updateString("name", "k"); r.updateInt("qty", 3); r.insertRow();
            ResultSet q = st.executeQuery("select string_agg(name, ',' order by id) from jdbc_items where id in (10, 1000)"); q.next(); return q.getString(1);
        });
        step("batch with a duplicate", () -> {
            PreparedStatement s = c.prepareStatement("insert into jdbc_items (id) values (?)");
            for (long id : new long[]{2000, 1, 2001}) { s.setLong(1, id); s.addBatch(); }
            String res;
            try { s.executeBatch(); res = "no error"; } catch (BatchUpdateException e) { res = e.getSQLState() + " " + Arrays.toString(e.getUpdateCounts()); }
            ResultSet r = st.executeQuery("select count(*) from jdbc_items where id >= 2000"); r.next(); return res + " kept " + r.getLong(1);
        });
        step("serial keys of a batch", () -> {
            st.execute("create table jdbc_serial (id bigserial primary key, name text)");
            PreparedStatement ps = c.prepareStatement("insert into jdbc_serial (name) values (?)", new String[]{"id"});
            for (int i = 0; i < 12; i++) { ps.setString(1, "s" + i); ps.addBatch(); }
            int[] counts = ps.executeBatch();
            ResultSet k = ps.getGeneratedKeys(); List<Long> ids = new ArrayList<>(); while (k.next()) ids.add(k.getLong(1));
            // Each key the driver was given names the row it inserted.
            PreparedStatement q = c.prepareStatement("select name from jdbc_serial where id = ?");
            StringBuilder sb = new StringBuilder(Arrays.toString(counts) + " ");
            for (long id : ids) { q.setLong(1, id); ResultSet r = q.executeQuery(); sb.append(r.next() ? r.getString(1) : "missing").append(' '); }
            ResultSet r = st.executeQuery("select count(distinct id) from jdbc_serial"); r.next();
            sb.append(r.getLong(1));
            st.execute("drop table jdbc_serial");
            return sb;
        });
        step("statement batch", () -> {
            // Literal statements, each parsed as the unnamed statement: every row goes, and is
            // changed, where its own key sends it.
            Statement s = c.createStatement();
            for (int i = 3001; i <= 3012; i++) s.addBatch("insert into jdbc_items (id, name, qty) values (" + i + ", 'sb" + i + "', 5)");
            for (int i = 3001; i <= 3012; i++) s.addBatch("update jdbc_items set qty = qty + " + i + " where id = " + i);
            StringBuilder sb = new StringBuilder(Arrays.toString(s.executeBatch()) + " ");
            PreparedStatement q = c.prepareStatement("select name, qty from jdbc_items where id = ?");
            for (long id = 3001; id <= 3012; id++) { q.setLong(1, id); ResultSet r = q.executeQuery(); sb.append(r.next() ? r.getString(1) + "=" + r.getInt(2) : "missing").append(' '); }
            return sb;
        });
        step("delete some", () -> st.executeUpdate("delete from jdbc_items where qty < 3"));
        step("final", () -> { ResultSet r = st.executeQuery("select count(*), sum(qty), sum(id) from jdbc_items"); r.next(); return r.getLong(1) + "/" + r.getLong(2) + "/" + r.getLong(3); });
        st.execute("drop table jdbc_items; drop table jdbc_codes");
        c.close();
    }
}
