# The BEAM side of the hot paths under :eprof, and the cost per operation of the codec and
# the framer on their own. Not part of `make bench`: a tool for tuning (bench/README.md).
#
#     mix run --no-start bench/profile_beam.exs            # per-operation costs only
#     mix run --no-start bench/profile_beam.exs casts calls fanout codec
#                                                          # :eprof of those paths
#
# casts: Symbiont.Python.cast/4 back to back (the caller and the host's owner); calls:
# Symbiont.Python.call/4 one at a time; fanout: checked publishes to a Python agent (the
# publisher, the agent's server, the host's owner); codec: the per-operation loop below.

Application.put_env(:symbiont, :agents, [])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.ProfileBeam do
  alias Symbiont.Host.{Framer, Protocol}
  alias Symbiont.MsgPack

  @n 200_000

  def main(args) do
    codec()
    for what <- args, do: profile(what)
  end

  ## Per-operation costs

  defp codec do
    cast = ["cast", "bench_funcs", "bump", [1]]
    event = ["event", 1, 42, "bench.fanout", %MsgPack.Bin{data: <<1>>}]
    ack = MsgPack.encode!(["ack", 1, 42, <<0x81, 0xA1, ?n, 0x2A>>], iodata: false)
    reply = MsgPack.encode!(["reply", 7, 1], iodata: false)
    publish = MsgPack.encode!(["publish", 1, "count.out", <<0x2A>>], iodata: false)
    frames = for _ <- 1..1000, into: <<>>, do: <<byte_size(ack)::32, ack::binary>>

    IO.puts("per operation (ns), the best of 5 loops of #{@n}:")
    time("MsgPack.encode a cast frame", fn -> MsgPack.encode(cast) end)
    time("MsgPack.encode an event frame", fn -> MsgPack.encode(event) end)
    time("Protocol.decode an ack frame", fn -> Protocol.decode(ack) end)
    time("Protocol.decode a reply frame", fn -> Protocol.decode(reply) end)
    time("Protocol.decode a publish frame", fn -> Protocol.decode(publish) end)

    time(
      "Framer.feed, per frame of a 1000-frame chunk",
      fn -> Framer.feed(Framer.new(64 * 1024 * 1024), frames) end,
      1000
    )
  end

  defp time(label, fun, per \\ 1) do
    n = div(@n, per)

    ns =
      for _ <- 1..5 do
        {us, _} = :timer.tc(fn -> loop(fun, n) end)
        us * 1000 / (n * per)
      end
      |> Enum.min()

    IO.puts("  #{String.pad_trailing(label, 48)} #{:erlang.float_to_binary(ns, decimals: 0)}")
  end

  defp loop(_fun, 0), do: :ok

  defp loop(fun, n) do
    fun.()
    loop(fun, n - 1)
  end

  ## :eprof of a path

  defp profile("codec") do
    eprof([self()], fn -> codec() end)
  end

  defp profile("casts") do
    host = start_funcs_host()

    eprof([self(), Symbiont.Host.whereis(host)], fn ->
      for _ <- 1..@n, do: :ok = Symbiont.Python.cast(host, "bench_funcs", "bump", [1])
      {:ok, _} = Symbiont.Python.call(host, "bench_funcs", "counted", [], timeout: 60_000)
    end)

    Symbiont.Python.stop(host)
  end

  defp profile("calls") do
    host = start_funcs_host()

    eprof([self(), Symbiont.Host.whereis(host)], fn ->
      for _ <- 1..div(@n, 10),
          do: {:ok, 1} = Symbiont.Python.call(host, "bench_funcs", "echo", [1])
    end)

    Symbiont.Python.stop(host)
  end

  defp profile("fanout") do
    :ok = Bench.Results.start_sink("profile-sink")
    Bench.Results.wait(fn -> Bench.Results.handled("profile-sink") >= 0 end)

    pids = [
      self(),
      Symbiont.Host.whereis("profile-sink"),
      Symbiont.Agent.Server.whereis("profile-sink")
    ]

    n = div(@n, 4)

    eprof(pids, fn ->
      for i <- 1..n, do: Bench.Results.publish_checked("bench.fanout", i)

      Bench.Results.await_handled([{"profile-sink", n}])
    end)

    Symbiont.Python.stop("profile-sink")
  end

  defp start_funcs_host do
    {:ok, _} = Symbiont.Python.start(name: "profile", python_path: [__DIR__])
    {:ok, _} = Symbiont.Python.call("profile", "bench_funcs", "echo", [1], timeout: 15_000)
    "profile"
  end

  defp eprof(pids, fun) do
    :eprof.start()
    :eprof.start_profiling(pids)
    fun.()
    :eprof.stop_profiling()
    :eprof.analyze(:total, sort: :time)
    :eprof.stop()
  end
end

Bench.ProfileBeam.main(System.argv())
