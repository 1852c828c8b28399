# `make bench`: runs the benchmarks of the suite (Bench.Results.suite/0), or those named on
# the command line, each in a BEAM of its own, then renders bench/RESULTS.md.
#
#     mix run --no-start bench/run.exs              # the suite, in order
#     mix run --no-start bench/run.exs mesh soak    # only these
#     QUICK=1 mix run --no-start bench/run.exs      # the short version
#
# A benchmark that fails does not stop the others; the run then exits with status 1.

Code.require_file("results.exs", __DIR__)

defmodule Bench.Run do
  @budget_s 600

  @doc "Runs the benchmarks named in `args` (the suite when none), then renders RESULTS.md."
  @spec main([String.t()]) :: :ok
  def main(args) do
    names = if args == [], do: Bench.Results.suite(), else: args
    {present, missing} = Enum.split_with(names, &File.exists?(script(&1)))
    for name <- missing, do: IO.puts("bench: no bench/#{name}.exs, skipped")
    t0 = System.monotonic_time(:millisecond)

    failed = Enum.reject(present, &(run(&1) == 0))

    seconds = (System.monotonic_time(:millisecond) - t0) / 1000
    # The header of RESULTS.md speaks of the last run of the whole suite: a run of a few
    # (`make soak`) adds their figures and dates, not a new header.
    if args == [], do: Bench.Report.record_run(present, seconds)
    Bench.Report.render()
    minutes = :erlang.float_to_binary(seconds / 60, decimals: 1)
    IO.puts("bench: #{length(present)} benchmark(s) in #{minutes} min")

    if args == [] and seconds > @budget_s,
      do: IO.puts("bench: over the budget of #{div(@budget_s, 60)} min")

    if failed != [] do
      IO.puts("bench: failed: #{Enum.join(failed, ", ")}")
      System.halt(1)
    end

    :ok
  end

  defp run(name) do
    IO.puts("\n==> bench/#{name}.exs")
    t0 = System.monotonic_time(:millisecond)

    {_, status} =
      System.cmd("mix", ["run", "--no-start", script(name)],
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    IO.puts(
      "==> #{name}: #{div(System.monotonic_time(:millisecond) - t0, 1000)} s, status #{status}"
    )

    status
  end

  defp script(name), do: Path.join(__DIR__, "#{name}.exs")
end

Bench.Run.main(System.argv())
