# The soak: the chaos run of test/symbiont/chaos_test.exs (Symbiont.Chaos: Python -> Wasm
# -> Python, a random host killed every 100-300 ms) for ten minutes, reporting throughput,
# losses, duplicates and the memory curve (the BEAM's total and the three hosts' RSS).
#
#     make bench BENCHES=soak          # ten minutes; not part of the suite (bench/README.md)
#     SOAK_S=60 mix run --no-start bench/soak.exs
#     QUICK=1 ...                      # one minute
#     SOAK_RATE=1000 ...               # messages a second (default 400)
#
# Memory should stay flat: the owners keep only what is in flight and waiting, and the
# hosts are restarted all along.

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

      if :ets.insert_new(table, {slot, elapsed_ms, beam_mb(), hosts_mb()}) do
        IO.puts("  #{div(elapsed_ms, 1000)} s: BEAM #{beam_mb()} MB, hosts #{hosts_mb()} MB")
      end
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

    samples = :ets.tab2list(table)
    {_, _, beam0, hosts0} = hd(samples)
    {_, _, beam1, hosts1} = List.last(samples)
    row = &Bench.Results.row/5
    throughput = report.out / (report.elapsed_ms / 1000)

    rows = [
      row.(
        "soak #{seconds} s, kill -9 every 100-300 ms: messages lost",
        report.losses,
        nil,
        nil,
        "≤ 0"
      ),
      row.(
        "soak: throughput out of the last stage (msgs/s)",
        throughput,
        "offered load",
        @rate,
        "(info)"
      ),
      row.("soak: BEAM memory at the end (MB)", beam1, "at the start", beam0, "(info)"),
      row.("soak: hosts' RSS at the end (MB)", hosts1, "at the start", hosts0, "(info)")
    ]

    curve =
      Enum.map_join(samples, "\n", fn {_, ms, beam, hosts} ->
        "| #{div(ms, 1000)} | #{beam} | #{hosts} |"
      end)

    details = """
    Seed #{seed}: #{report.sent} sent, #{report.kills} kills, #{report.out} out,
    #{report.dead_lettered} dead-lettered #{inspect(report.dead_reasons)}, #{report.duplicates}
    duplicates (no dedupe yet), restarts #{inspect(report.restarts)}.

    | s | BEAM (MB) | hosts' RSS (MB) |
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
