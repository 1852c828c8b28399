# The mesh: local broadcast throughput beside a raw Registry.dispatch, end-to-end fan-out
# to Python agents on 4 hosts, and cross-node publish -> deliver latency.
#
#     make bench            # every benchmark; or: mix run --no-start bench/mesh.exs
#     make bench QUICK=1    # fewer messages
#
# Targets (bench/RESULTS.md): local broadcast >= 0.9x Registry.dispatch; end-to-end to
# Python >= 100k msgs/s on this 2-core machine.

Application.put_env(:symbiont, :agents, [])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)
Code.require_file("../test/support/cluster.ex", __DIR__)

defmodule Bench.DelayEcho do
  # Compiled here and loaded on the peer node: a subscriber that answers each timestamped
  # message with its delay (both nodes run on this machine, so os_time is one clock).
  def module do
    defmodule Echo do
      def start(to) do
        parent = self()

        pid =
          spawn(fn ->
            :ok = Symbiont.Mesh.subscribe(Symbiont.Mesh, "bench.latency")
            send(parent, :subscribed)
            loop(to)
          end)

        receive do: (:subscribed -> pid)
      end

      defp loop(to) do
        receive do
          {:t, t} ->
            send(to, {:delay, System.os_time(:nanosecond) - t})
            loop(to)
        end
      end
    end
  end
end

defmodule Bench.Mesh do
  @quick System.get_env("QUICK") in ["1", "true"]
  @local if @quick, do: 20_000, else: 50_000
  @fanout if @quick, do: 20_000, else: 100_000
  @latency if @quick, do: 2_000, else: 10_000
  @rounds if @quick, do: 1, else: 5

  def run do
    local = for n <- [1, 10], do: local_broadcast(n)
    {e2e, e2e_base} = fanout(4)
    {lat50, lat99, base50, base99} = cross_node()

    row = &Bench.Results.row/5

    rows =
      for {n, sym, raw} <- local do
        row.(
          "local broadcast, #{n} subscriber(s) (msgs/s)",
          sym,
          "Registry.dispatch",
          raw,
          "≥ 0.9×"
        )
      end ++
        [
          row.(
            "publish → 4 Python agents → ack (deliveries/s)",
            e2e,
            "raw Port echo, 4 ports",
            e2e_base,
            "≥ 100k/s"
          ),
          row.(
            "cross-node publish → deliver p50 (µs)",
            lat50,
            "send/2 to the remote pid",
            base50,
            "(info)"
          ),
          row.(
            "cross-node publish → deliver p99 (µs)",
            lat99,
            "send/2 to the remote pid",
            base99,
            "(info)"
          )
        ]

    Bench.Results.record("mesh", rows)
  end

  ## Local broadcast vs Registry.dispatch

  defp local_broadcast(n) do
    mesh = :"bench_mesh_#{n}"
    {:ok, _} = Supervisor.start_link([{Symbiont.Mesh, name: mesh}], strategy: :one_for_one)
    registry = :"bench_registry_#{n}"

    {:ok, _} =
      Registry.start_link(
        keys: :duplicate,
        name: registry,
        # One partition, as Phoenix.PubSub's default: a dispatch reads one key table.
        # (Symbiont.Mesh.PG keeps its subscriptions in an ETS table of its own, read with
        # one lookup: Symbiont.Mesh.Subscriptions.)
        partitions: 1
      )

    mesh_subs = for _ <- 1..n, do: sink(fn -> Symbiont.Mesh.subscribe(mesh, "t") end)
    raw_subs = for _ <- 1..n, do: sink(fn -> Registry.register(registry, "t", nil) end)

    raw = fn ->
      rate(raw_subs, fn ->
        Registry.dispatch(registry, "t", fn entries ->
          for {pid, _} <- entries, do: send(pid, :m)
        end)
      end)
    end

    sym = fn -> rate(mesh_subs, fn -> Symbiont.Mesh.broadcast(mesh, "t", :m) end) end

    # Many short rounds, each side first in every other one, and the median of each side:
    # with a handful of processes on 2 cores, one long run mostly measures the scheduler's
    # mood, and whichever side always ran second would inherit the first one's garbage.
    rounds =
      for i <- 1..(@rounds * 10) do
        if rem(i, 2) == 0 do
          raw = raw.()
          {sym.(), raw}
        else
          sym = sym.()
          {sym, raw.()}
        end
      end

    sym = Bench.Results.median(Enum.map(rounds, &elem(&1, 0)))
    raw = Bench.Results.median(Enum.map(rounds, &elem(&1, 1)))
    IO.puts("  local broadcast, #{n} subscriber(s): #{round(sym)} vs #{round(raw)} msgs/s")
    {n, sym, raw}
  end

  # A process that counts messages and reports when it has seen `expect`.
  defp sink(subscribe) do
    parent = self()

    pid =
      spawn_link(fn ->
        subscribe.()
        send(parent, {:ready, self()})
        sink_loop(parent)
      end)

    receive do: ({:ready, ^pid} -> pid)
  end

  defp sink_loop(parent) do
    receive do
      {:expect, n, ref} -> count(n, ref, parent)
    end
  end

  defp count(0, ref, parent) do
    send(parent, {:done, ref})
    sink_loop(parent)
  end

  defp count(n, ref, parent) do
    receive do
      :m -> count(n - 1, ref, parent)
    end
  end

  defp rate(subs, publish) do
    ref = make_ref()
    for pid <- subs, do: send(pid, {:expect, @local, ref})

    {us, _} =
      :timer.tc(fn ->
        for _ <- 1..@local, do: publish.()
        for _ <- subs, do: receive(do: ({:done, ^ref} -> :ok))
      end)

    @local / us * 1_000_000
  end

  ## End to end: publisher -> Python agents on 4 hosts -> ack

  defp fanout(hosts) do
    {:ok, python} = Symbiont.Config.python_executable()
    names = for i <- 1..hosts, do: "sink-#{i}"

    for name <- names, do: Bench.Results.start_sink(name)
    Bench.Results.wait(fn -> Enum.all?(names, &(Bench.Results.handled(&1) == 0)) end)

    base = raw_fanout(python, hosts)

    results =
      for round <- 1..@rounds do
        before = Enum.map(names, &Bench.Results.handled/1)

        {us, _} =
          :timer.tc(fn ->
            # Checked publishes: when an agent's queue is full the publisher waits for
            # room instead of losing events.
            for i <- 1..@fanout, do: Bench.Results.publish_checked("bench.fanout", i)

            Bench.Results.await_handled(
              for {n, b} <- Enum.zip(names, before), do: {n, b + @fanout}
            )
          end)

        rate = hosts * @fanout / us * 1_000_000
        IO.puts("  fan-out round #{round}: #{round(rate)} deliveries/s")
        rate
      end

    for name <- names, do: Symbiont.Python.stop(name)
    {Bench.Results.median(results), base}
  end

  # The same number of frames through 4 raw Python echo ports, read back by this process.
  defp raw_fanout(python, hosts) do
    frame =
      Symbiont.MsgPack.encode!(["event", 1, "bench.fanout", %Symbiont.MsgPack.Bin{data: <<1>>}],
        iodata: false
      )

    ports =
      for _ <- 1..hosts,
          do:
            Port.open({:spawn_executable, python}, [
              :binary,
              {:packet, 4},
              :nouse_stdio,
              args: [Path.join(__DIR__, "raw_echo.py")]
            ])

    # In windows of 500 frames a port, so that no pipe fills up while nobody reads it.
    chunks = div(@fanout, 500)

    {us, _} =
      :timer.tc(fn ->
        for _ <- 1..chunks do
          for _ <- 1..500, port <- ports, do: Port.command(port, frame)
          for port <- ports, _ <- 1..500, do: receive(do: ({^port, {:data, _}} -> :ok))
        end
      end)

    Enum.each(ports, &Port.close/1)
    hosts * chunks * 500 / us * 1_000_000
  end

  ## Cross-node latency

  defp cross_node do
    {_, 0} = System.cmd("epmd", ["-daemon"])
    {:ok, _} = Node.start(:"bench_#{System.unique_integer([:positive])}", :shortnames)

    args = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    # The cookie from a file, never on the peer's command line (docs/SECURITY.md §3).
    name = :"bench_peer_#{System.unique_integer([:positive])}"
    {:ok, peer, node} = :peer.start(%{name: name, args: args, env: Symbiont.Cluster.cookie_env()})

    :ok = :erpc.call(node, Application, :put_env, [:logger, :level, :warning])
    :ok = :erpc.call(node, Application, :put_env, [:symbiont, :agents, []])
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:symbiont])

    me = self()
    # On the peer: a subscriber that answers each timestamped message with the delay.
    {:module, mod, bin, _} = Bench.DelayEcho.module()
    {:module, _} = :erpc.call(node, :code, :load_binary, [mod, ~c"nofile", bin])
    echo = :erpc.call(node, mod, :start, [me])

    Bench.Results.wait(fn ->
      :erpc.call(node, Symbiont.Mesh, :members, [Symbiont.Mesh, "bench.latency", nil]) != [] and
        length(:pg.get_members(Symbiont.Mesh.Adapter.PG, :forwarders)) == 2
    end)

    mesh = delays(fn t -> Symbiont.Mesh.broadcast(Symbiont.Mesh, "bench.latency", {:t, t}) end)
    raw = delays(fn t -> send(echo, {:t, t}) end)
    :peer.stop(peer)
    Symbiont.Cluster.remove_cookie_home()

    {Bench.Results.pct(mesh, 50), Bench.Results.pct(mesh, 99), Bench.Results.pct(raw, 50),
     Bench.Results.pct(raw, 99)}
  end

  defp delays(send_one) do
    for _ <- 1..@latency do
      send_one.(System.os_time(:nanosecond))
      receive(do: ({:delay, d} -> d))
    end
    |> Enum.sort()
    |> List.to_tuple()
  end
end

Bench.Mesh.run()
