# The soak: the chaos run of test/symbiont/chaos_test.exs (Symbiont.Chaos: Python -> Wasm
# -> Python, dedupe on the last two stages, a random host killed every 100-300 ms) for ten
# minutes, reporting losses, whether each stage's count is exact, throughput, copies and
# duplicates dropped, redeliveries, and the memory curve (the BEAM's total and the RSS of
# the node's Python processes).
#
#     make soak                        # ten minutes (make bench BENCHES=soak: the same)
#     SOAK_S=60 make soak              # or: SOAK_S=60 mix run --no-start bench/soak.exs
#     QUICK=1 ...                      # one minute
#     SOAK_RATE=1000 ...               # messages a second (default 400)
#
# Memory should stay flat: the owners keep only what is in flight and waiting (and the
# dedupe stages a bounded window of ids per publisher), and the hosts are restarted all
# along. The first sample is taken after 1,000 messages, once the pipeline is warm.

Application.put_env(:symbiont, :agents, [])
Application.put_env(:symbiont, :conductor, enabled: false)
Application.put_env(:symbiont, :status_page, false)
Logger.configure(level: :critical)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)
Code.require_file("../test/support/chaos.ex", __DIR__)

defmodule Bench.Soak do
  # Below what the pipeline handles while its hosts are being killed on this machine, so
  # that the run is a steady state: a backlog would grow the memory for its own reason.
  @rate String.to_integer(System.get_env("SOAK_RATE") || "400")

  def run do
    seconds =
      case {System.get_env("SOAK_S"), Bench.Results.quick?()} do
        {nil, true} -> 60
        {nil, false} -> 600
        {s, _} -> String.to_integer(s)
      end

    seed = :rand.uniform(1_000_000)
    IO.puts("soak: #{seconds} s at #{@rate} messages/s, seed #{seed}")
    table = :ets.new(:soak_samples, [:public, :ordered_set])
    every_ms = max(div(seconds * 1_000, 20), 1_000)

    sample = fn elapsed_ms ->
      slot = div(elapsed_ms, every_ms)
      {beam, hosts} = {beam_mb(), hosts_mb()}

      if :ets.insert_new(table, {slot, elapsed_ms, beam, hosts}),
        do: IO.puts("  #{div(elapsed_ms, 1000)} s: BEAM #{beam} MB, Python #{hosts} MB")
    end

    report =
      Symbiont.Chaos.run(
        seed: seed,
        seconds: seconds,
        rate: @rate,
        prefix: "soak",
        sample: sample,
        progress: &IO.puts/1
      )

    IO.puts("soak " <> Symbiont.Chaos.format(report))
    samples = :ets.tab2list(table)
    {_, _, beam0, hosts0} = hd(samples)
    {_, _, beam1, hosts1} = List.last(samples)
    beam_max = samples |> Enum.map(&elem(&1, 2)) |> Enum.max()
    row = &Bench.Results.row/5
    throughput = report.out / (report.elapsed_ms / 1000)

    off =
      Enum.sum(for stage <- [:a, :b, :c], do: abs(report.counts[stage] - report.expected[stage]))

    rows = [
      row.(
        "soak #{seconds} s, kill -9 every 100-300 ms: messages lost",
        report.losses,
        nil,
        nil,
        "≤ 0"
      ),
      row.("soak: stage counts off the messages they got (sum)", off, nil, nil, "≤ 0"),
      row.(
        "soak: throughput out of the last stage (msgs/s)",
        throughput,
        "offered load",
        @rate,
        "≥ 0.9×"
      ),
      row.("soak: BEAM memory at the end (MB)", beam1, "at the first sample", beam0, "≤ 1.5×"),
      row.(
        "soak: BEAM memory, highest sample (MB)",
        beam_max,
        "at the first sample",
        beam0,
        "(info)"
      ),
      row.(
        "soak: Python processes' RSS at the end (MB)",
        hosts1,
        "at the first sample",
        hosts0,
        "(info)"
      )
    ]

    curve =
      Enum.map_join(samples, "\n", fn {_, ms, beam, hosts} ->
        "| #{div(ms, 1000)} | #{beam} | #{hosts} |"
      end)

    details = """
    Seed #{seed}: #{report.sent} sent, #{report.kills} kills, #{report.out} out of the last stage,
    #{report.dead_lettered} dead-lettered #{inspect(report.dead_reasons)}. Each stage's count,
    #{inspect(report.counts)}, against the messages that reached it less those it dead-lettered,
    #{inspect(report.expected)}. Copies published again (after a crash, or by the first stage's
    handler that fails the first attempt at every 7th message after publishing), by stage:
    #{inspect(report.copies)}; duplicates dropped by the dedupe stages: #{inspect(report.duplicates)};
    deliveries sent again: #{inspect(report.redelivered)}; host restarts
    #{inspect(report.restarts)}; messages out of order at the end: #{report.out_of_order}.

    | s | BEAM (MB) | Python processes' RSS (MB) |
    |---|---|---|
    #{curve}
    """

    Bench.Results.record("soak", rows, details: details)
  end

  defp beam_mb, do: Float.round(:erlang.memory(:total) / 1_048_576, 1)

  # The RSS of every Python process of this node (hosts and standbys): the children of its
  # erl_child_setup, found in /proc (a host being restarted has no os_pid to ask for).
  defp hosts_mb do
    beam = System.pid()
    procs = for dir <- Path.wildcard("/proc/[0-9]*"), stat = stat(dir), do: stat
    setup = for {pid, ppid, _} <- procs, ppid == beam, do: pid
    kb = for {_pid, ppid, rss} <- procs, ppid in setup, reduce: 0, do: (acc -> acc + rss)
    Float.round(kb / 1024, 1)
  end

  # {pid, ppid, rss_kb} of a /proc/PID directory, or nil.
  defp stat(dir) do
    with {:ok, status} <- File.read(Path.join(dir, "status")),
         [_, ppid] <- Regex.run(~r/PPid:\s+(\d+)/, status),
         [_, rss] <- Regex.run(~r/VmRSS:\s+(\d+) kB/, status) do
      {Path.basename(dir), ppid, String.to_integer(rss)}
    else
      _ -> nil
    end
  end
end

Bench.Soak.run()
