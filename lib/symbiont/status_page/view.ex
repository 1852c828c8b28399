defmodule Symbiont.StatusPage.View do
  @moduledoc false
  # The page: one HTML document with its style and script inline (it works offline and
  # loads nothing from elsewhere). The server draws the topology; the script renders the
  # agents and the feed from the snapshot embedded in the page, then keeps them live:
  # events arrive by Server-Sent Events (/events), the table and the diagram are fetched
  # again after each event and every few seconds.
  #
  # Elements the tests (and anyone scripting the page) can rely on:
  #   body[data-live]                 "open" while the event stream is connected
  #   #agents tr[data-agent=ID]       one row per replica, with data-role, data-health,
  #                                   data-crashes, data-restarts, data-failed and
  #                                   data-pinned (the pinned fields, comma-separated)
  #   #feed li[data-id]               one item per event, newest first, with data-type
  #                                   (health | remediation), data-agent, data-host and
  #                                   data-action (a remediation) or data-health (a health event)

  alias Symbiont.StatusPage.JSON

  @spec page(map, String.t()) :: iodata
  def page(snapshot, svg) do
    [
      """
      <!DOCTYPE html>
      <html lang="en">
      <head>
      <meta charset="utf-8">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>Symbiont · #{Symbiont.Topology.xml_escape(snapshot.node)}</title>
      <style>#{css()}</style>
      </head>
      <body data-live="connecting">
      <header>
        <h1>Symbiont <small>on #{Symbiont.Topology.xml_escape(snapshot.node)}</small></h1>
        <span id="live" class="badge">connecting…</span>
        <span id="summary"></span>
      </header>
      <main>
      <section id="topology"><h2>Topology</h2><div id="diagram">#{svg}</div></section>
      <section><h2>Agents</h2>
      <table id="agents">
        <thead><tr><th>agent</th><th>role</th><th>host</th><th>status</th><th>health</th><th>queue</th>
        <th>in flight</th><th>handled</th><th>failed</th><th>failure rate</th><th>crashes</th>
        <th>restarts</th><th>pinned</th><th>topics</th></tr></thead>
        <tbody id="agents-body"></tbody>
      </table>
      <noscript>The table and the feed need JavaScript; <a href="/status.json">/status.json</a> has the same data.</noscript>
      </section>
      <section><h2>Health and remediation</h2><ol id="feed"></ol></section>
      </main>
      <script type="application/json" id="snapshot">
      """,
      JSON.encode(snapshot),
      """
      </script>
      <script>#{script()}</script>
      </body>
      </html>
      """
    ]
  end

  defp css do
    """
    body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
    header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.2em; background: #23395d; color: #fff; }
    header h1 { font-size: 1.2em; margin: 0; } header small { font-weight: normal; opacity: .8; }
    main { padding: 0 1.2em 2em; } h2 { font-size: 1em; margin: 1.4em 0 .4em; }
    .badge { padding: 0 .5em; border-radius: 1em; background: #888; font-size: .85em; }
    body[data-live="open"] .badge { background: #2e8b57; }
    #diagram { overflow-x: auto; background: #fff; border: 1px solid #ddd; padding: .4em; }
    table { border-collapse: collapse; background: #fff; }
    th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
    td.num { text-align: right; font-variant-numeric: tabular-nums; }
    .h-healthy { color: #2e8b57; } .h-degraded, .h-overloaded { color: #b8860b; }
    .h-failing, .h-quarantined { color: #c0392b; font-weight: bold; } .h-retired { color: #888; }
    #feed { list-style: none; padding: 0; margin: 0; font-family: ui-monospace, monospace; font-size: .9em; }
    #feed li { padding: .15em .4em; border-bottom: 1px solid #eee; }
    #feed li[data-type="remediation"] { background: #eef5ff; }
    #feed time { color: #777; margin-right: .6em; }
    """
  end

  defp script do
    """
    (() => {
      const $ = (id) => document.getElementById(id);
      const snapshot = JSON.parse($("snapshot").textContent);
      let lastId = 0;

      function cell(tr, text, cls) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }

      function size(bytes) {
        if (bytes < 1024) return bytes + " B";
        if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KiB";
        return (bytes / 1048576).toFixed(1) + " MiB";
      }

      function renderAgents(s) {
        const body = document.createElement("tbody");
        body.id = "agents-body";
        for (const a of s.agents) {
          const tr = document.createElement("tr");
          const pinned = Object.keys(a.pins).sort();
          tr.dataset.agent = a.id;
          tr.dataset.role = a.role;
          tr.dataset.health = a.health;
          tr.dataset.crashes = a.crashes;
          tr.dataset.restarts = a.restarts;
          tr.dataset.failed = a.failed;
          tr.dataset.pinned = pinned.join(",");
          if (a.health_reason) tr.title = a.health_reason;
          cell(tr, a.id); cell(tr, a.role); cell(tr, a.host);
          cell(tr, a.quarantined ? "quarantined" : a.status);
          cell(tr, a.health, "h-" + a.health);
          cell(tr, a.queue + " / " + a.max_queue + " (" + size(a.queue_bytes) + ")", "num");
          cell(tr, a.in_flight, "num");
          cell(tr, a.handled, "num"); cell(tr, a.failed, "num");
          cell(tr, a.failure_rate === null ? "-" : Math.round(a.failure_rate * 100) + "%", "num");
          cell(tr, a.crashes, "num"); cell(tr, a.restarts, "num");
          cell(tr, pinned.map((f) => f + " " + JSON.stringify(a.pins[f].value)).join(", ") || "-");
          cell(tr, a.topics.join(", ") || "-");
          body.appendChild(tr);
        }
        if (!s.agents.length) {
          const tr = document.createElement("tr");
          cell(tr, "no agents run on this node");
          tr.firstChild.colSpan = 14;
          body.appendChild(tr);
        }
        $("agents-body").replaceWith(body);
        $("summary").textContent = s.hosts.length + " host(s), " + s.agents.length + " agent(s)";
      }

      function describe(type, e) {
        if (type === "remediation") {
          const who = e.agent || e.host || e.node;
          const where = e.host && e.host !== e.agent ? " (host " + e.host + ")" : "";
          return e.action + " " + who + where + " by " + e.by + ": " + e.reason;
        }
        return e.kind + " " + (e.agent || "node " + e.node) + ": " + e.reason;
      }

      function addEvent(entry) {
        if (entry.id <= lastId) return;
        lastId = entry.id;
        const e = entry.event, li = document.createElement("li");
        li.dataset.id = entry.id;
        li.dataset.type = entry.kind;
        li.dataset.agent = e.agent || "";
        li.dataset.host = e.host || "";
        if (entry.kind === "remediation") li.dataset.action = e.action;
        else li.dataset.health = e.kind;
        const time = document.createElement("time");
        time.textContent = new Date(entry.at_ms).toLocaleTimeString();
        li.append(time, entry.kind + " · " + describe(entry.kind, e));
        const feed = $("feed");
        feed.prepend(li);
        while (feed.children.length > snapshot.keep) feed.lastChild.remove();
      }

      let pending = null;
      async function refresh() {
        pending = null;
        try {
          const [s, svg] = await Promise.all([
            fetch("/status.json").then((r) => r.json()),
            fetch("/topology.svg").then((r) => r.text()),
          ]);
          renderAgents(s);
          $("diagram").innerHTML = svg;
        } catch (_) { /* the node is restarting: the next round will tell */ }
      }
      const refreshSoon = () => { pending = pending || setTimeout(refresh, 150); };

      renderAgents(snapshot);
      snapshot.events.forEach(addEvent);
      setInterval(refresh, 3000);

      const events = new EventSource("/events?after=" + lastId);
      events.onopen = () => {
        document.body.dataset.live = "open";
        $("live").textContent = "live";
      };
      events.onerror = () => {
        document.body.dataset.live = "closed";
        $("live").textContent = "reconnecting…";
      };
      for (const type of ["health", "remediation"]) {
        events.addEventListener(type, (m) => { addEvent(JSON.parse(m.data)); refreshSoon(); });
      }
    })();
    """
  end
end
