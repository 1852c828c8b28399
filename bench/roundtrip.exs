# Elixir -> Python call round trip and pipelined cast throughput, each beside a raw Port
# echo baseline measured in the same run (see bench/RESULTS.md).
#
#     make bench            # or: mix run --no-start bench/roundtrip.exs
#     QUICK=1 make bench    # fewer iterations
#
# Targets (ratios, since absolute times vary): call p50 <= 1.2x the raw echo, p99 <= 2x;
# pipelined casts >= 0.5x the raw echo's throughput.

Application.put_env(:symbiont, :agents, [])
Application.put_env(:logger, :level, :warning)
{:ok, _} = Application.ensure_all_started(:symbiont)

defmodule Bench.Roundtrip do
  @quick System.get_env("QUICK") in ["1", "true"]
  @calls if @quick, do: 5_000, else: 20_000
  @casts if @quick, do: 20_000, else: 100_000
  @warmup 2_000
  @rounds if @quick, do: 3, else: 5

  def run do
    {:ok, python} = Symbiont.Config.python_executable()
    dir = Path.expand(".", __DIR__)
    raw = open_raw(python, Path.join(dir, "raw_echo.py"))
    {:ok, _} = Symbiont.Python.start(name: "bench", python_path: [dir])
    {:ok, _} = Symbiont.Python.call("bench", "bench_funcs", "echo", [1], timeout: 15_000)
    # The same host without its adaptive spin (python/symbiont/_transport.py), to show
    # what the spin buys: the raw echo blocks in read() like this one.
    {:ok, _} =
      Symbiont.Python.start(
        name: "bench-nospin",
        python_path: [dir],
        env: [{"SYMBIONT_SPIN_US", "0"}]
      )

    {:ok, _} = Symbiont.Python.call("bench-nospin", "bench_funcs", "echo", [1], timeout: 15_000)

    # The raw echo carries the bytes of a real call frame, so both move the same payload.
    frame = Symbiont.MsgPack.encode!(["call", 1, "bench_funcs", "echo", [1]], iodata: false)

    IO.puts(
      "#{@rounds} round(s), each: #{@calls} calls after #{@warmup} warm-up calls, " <>
        "then #{@casts} pipelined messages; the median round is reported"
    )

    results =
      for round <- 1..@rounds do
        raw_lat = latencies(fn -> raw_call(raw, frame) end, @calls)

        sym_lat =
          latencies(
            fn -> {:ok, 1} = Symbiont.Python.call("bench", "bench_funcs", "echo", [1]) end,
            @calls
          )

        nospin_lat =
          latencies(
            fn -> {:ok, 1} = Symbiont.Python.call("bench-nospin", "bench_funcs", "echo", [1]) end,
            @calls
          )

        raw_tp = raw_pipelined(raw, frame, @casts)
        sym_tp = cast_pipelined(@casts)
        IO.puts("  round #{round}/#{@rounds} done")

        %{
          sym_p50: Bench.Results.pct(sym_lat, 50),
          raw_p50: Bench.Results.pct(raw_lat, 50),
          sym_p99: Bench.Results.pct(sym_lat, 99),
          nospin_p50: Bench.Results.pct(nospin_lat, 50),
          nospin_p99: Bench.Results.pct(nospin_lat, 99),
          raw_p99: Bench.Results.pct(raw_lat, 99),
          sym_tp: sym_tp,
          raw_tp: raw_tp
        }
      end

    m = fn key -> Bench.Results.median(Enum.map(results, & &1[key])) end

    Port.close(raw)
    Symbiont.Python.stop("bench")
    Symbiont.Python.stop("bench-nospin")

    row = &Bench.Results.row(&1, m.(&2), "raw Port echo", m.(&3), &4)

    Bench.Results.record("roundtrip", [
      row.("call round trip p50 (µs)", :sym_p50, :raw_p50, "≤ 1.2×"),
      row.("call round trip p99 (µs)", :sym_p99, :raw_p99, "≤ 2×"),
      row.("pipelined casts (msgs/s)", :sym_tp, :raw_tp, "≥ 0.5×"),
      row.("call p50, host spin off (µs)", :nospin_p50, :raw_p50, "(info)"),
      row.("call p99, host spin off (µs)", :nospin_p99, :raw_p99, "(info)")
    ])
  end

  defp open_raw(python, script) do
    Port.open({:spawn_executable, python}, [:binary, {:packet, 4}, :nouse_stdio, args: [script]])
  end

  defp raw_call(port, frame) do
    Port.command(port, frame)

    receive do
      {^port, {:data, _}} -> :ok
    end
  end

  defp latencies(fun, n) do
    for _ <- 1..@warmup, do: fun.()

    for _ <- 1..n do
      t = System.monotonic_time(:nanosecond)
      fun.()
      System.monotonic_time(:nanosecond) - t
    end
    |> Enum.sort()
    |> List.to_tuple()
  end

  defp raw_pipelined(port, frame, n) do
    {us, :ok} =
      :timer.tc(fn ->
        for _ <- 1..n, do: Port.command(port, frame)
        for _ <- 1..n, do: receive(do: ({^port, {:data, _}} -> :ok))
        :ok
      end)

    n / us * 1_000_000
  end

  defp cast_pipelined(n) do
    {:ok, before} = Symbiont.Python.call("bench", "bench_funcs", "counted", [])

    {us, :ok} =
      :timer.tc(fn ->
        for _ <- 1..n, do: :ok = Symbiont.Python.cast("bench", "bench_funcs", "bump", [1])
        # A call after the casts returns once every cast before it was handled.
        {:ok, count} =
          Symbiont.Python.call("bench", "bench_funcs", "counted", [], timeout: 120_000)

        ^count = before + n
        :ok
      end)

    n / us * 1_000_000
  end
end

Code.require_file("results.exs", __DIR__)
Bench.Roundtrip.run()
