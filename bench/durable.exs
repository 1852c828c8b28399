# What a durable agent's journal costs (Symbiont.Journal, docs/DURABILITY.md).
#
#     nice -n 10 mix run --no-start bench/durable.exs      # QUICK=1: a short run
#
# Two Python agents that count events (bench_agents:Tally), each in a host of its own,
# alike but for `durable: true`: a burst of events is published to one (checked
# publishes, so none is lost to a full queue) and timed until all are acked; the two
# alternate, and each figure is the median of the rounds. Also: how many events one
# fsync covers (group commit), and what one fsync per event would cost instead,
# measured on the same journal (one commit per event).

Application.put_env(:symbiont, :agents, [])
Application.put_env(:symbiont, :conductor, enabled: false)
Application.put_env(:symbiont, :status_page, false)

data_dir = Path.join(System.tmp_dir!(), "symbiont-bench-durable-#{System.pid()}")
Application.put_env(:symbiont, :data_dir, data_dir)
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.Durable do
  alias Symbiont.Agent.Server

  @quick Bench.Results.quick?()
  @events if @quick, do: 5_000, else: 20_000
  @rounds if @quick, do: 3, else: 5
  @fsyncs if @quick, do: 500, else: 2_000

  def run(data_dir) do
    agents = for durable <- [false, true], into: %{}, do: {durable, start(durable)}

    rates =
      for _round <- 1..@rounds, durable <- [false, true] do
        rate = burst(agents[durable])
        IO.puts("  #{if durable, do: "durable", else: "plain  "}: #{round(rate)} events/s")
        {durable, rate}
      end

    plain = Bench.Results.median(for {false, r} <- rates, do: r)
    durable = Bench.Results.median(for {true, r} <- rates, do: r)
    {:ok, %{journal: journal}} = Server.info(agents[true].name)
    per_commit = journal.accepted / max(journal.commits, 1)
    per_event_us = (1 / durable - 1 / plain) * 1_000_000
    fsync_us = fsync_each(data_dir)

    IO.puts("""

    | measure | durable | not durable | ratio |
    |---|---|---|---|
    | Python agent, publish → ack (events/s) | #{round(durable)} | #{round(plain)} | #{Float.round(durable / plain, 2)}× |
    | journal cost per event (µs) | #{Float.round(per_event_us, 1)} | | |
    | events per fsync (group commit) | #{Float.round(per_commit, 1)} | | |
    | one fsync per event instead, a journal commit per event (µs/event) | #{Float.round(fsync_us, 1)} | | |

    #{journal.accepted} events journaled in #{journal.commits} commits, #{journal.compactions} compactions; \
    the journal ends at #{journal.bytes} bytes.
    """)

    File.rm_rf!(data_dir)
  end

  defp start(durable) do
    name = "tally-#{if durable, do: "durable", else: "plain"}"
    topic = "bench.durable.#{name}"

    {:ok, _} =
      Symbiont.Python.start(
        name: name,
        python_path: [__DIR__],
        agent: [
          name: name,
          python: "bench_agents:Tally",
          overflow: :reject,
          durable: durable,
          config: %{"in" => topic}
        ]
      )

    Bench.Results.wait(fn -> match?({:ok, %{status: :ready}}, Server.info(name)) end)
    Bench.Results.wait(fn -> Symbiont.Mesh.members(Symbiont.Mesh, topic, name) != [] end)
    %{name: name, topic: topic}
  end

  defp burst(%{name: name, topic: topic}) do
    {:ok, %{handled: before}} = Server.info(name)

    {us, _} =
      :timer.tc(fn ->
        for i <- 1..@events, do: Bench.Results.publish_checked(topic, i)

        Bench.Results.wait(fn ->
          match?({:ok, %{handled: n}} when n >= before + @events, Server.info(name))
        end)
      end)

    @events / us * 1_000_000
  end

  # An event accepted and committed (written and synced) one at a time.
  defp fsync_each(dir) do
    {:ok, journal, _} = Symbiont.Journal.open(Path.join(dir, "fsync.log"))
    event = Symbiont.Event.new!("bench.durable", 1)

    {us, journal} =
      :timer.tc(fn ->
        Enum.reduce(1..@fsyncs, journal, fn i, journal ->
          {_event, journal} = Symbiont.Journal.accept(journal, %{event | seq: i})
          {:ok, journal} = Symbiont.Journal.commit(journal, fn -> [] end)
          journal
        end)
      end)

    Symbiont.Journal.close(journal)
    us / @fsyncs
  end
end

Bench.Durable.run(data_dir)
