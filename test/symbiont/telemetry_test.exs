defmodule Symbiont.TelemetryTest do
  use ExUnit.Case, async: true

  doctest Symbiont.Telemetry

  alias Symbiont.Telemetry

  test "handlers attached concurrently are all kept and called in attach order" do
    event = [:test, :concurrent, :"n#{System.unique_integer([:positive])}"]
    me = self()
    ids = for i <- 1..200, do: {event, i}

    ids
    |> Task.async_stream(
      fn id -> Telemetry.attach(id, event, fn _, _, _, id -> send(me, {:called, id}) end, id) end,
      max_concurrency: 50
    )
    |> Enum.each(fn {:ok, result} -> assert result == :ok end)

    Telemetry.execute(event, %{}, %{})
    called = for _ <- ids, do: assert_receive({:called, id}, 1_000) && id
    assert Enum.sort(called) == Enum.sort(ids)
    refute_received {:called, _}

    for id <- ids, do: assert(Telemetry.detach(id) == :ok)
    Telemetry.execute(event, %{}, %{})
    refute_received {:called, _}
  end

  test "ids are unique across events; detach of an unknown id says so" do
    id = make_ref()
    assert :ok = Telemetry.attach(id, [:test, :a], fn _, _, _, _ -> :ok end, nil)

    assert {:error, :already_exists} =
             Telemetry.attach(id, [:test, :b], fn _, _, _, _ -> :ok end, nil)

    assert :ok = Telemetry.detach(id)
    assert {:error, :not_found} = Telemetry.detach(id)
  end

  test "a handler that raises is detached and logged; the others still run" do
    event = [:test, :raises, :"n#{System.unique_integer([:positive])}"]
    me = self()
    :ok = Telemetry.attach({event, :bad}, event, fn _, _, _, _ -> raise "boom" end, nil)
    :ok = Telemetry.attach({event, :good}, event, fn _, m, _, _ -> send(me, m) end, nil)

    log = ExUnit.CaptureLog.capture_log(fn -> Telemetry.execute(event, %{n: 1}, %{}) end)

    assert log =~ "failed and was detached"
    assert log =~ "boom"
    assert_received %{n: 1}
    assert {:error, :not_found} = Telemetry.detach({event, :bad})
    assert :ok = Telemetry.detach({event, :good})
  end

  # The same handlers, the same calls: what Symbiont.Telemetry does is what the real
  # :telemetry does (`make test-telemetry TELEMETRY_PATH=...` runs the second test).
  describe "the API of :telemetry" do
    test "Symbiont.Telemetry: spans, attach_many, list_handlers, a failing handler" do
      assert trace(Telemetry) == expected_trace()
    end

    @tag :telemetry_lib
    test "the real :telemetry gives the same trace, and gets Symbiont's spans" do
      # A variable: the default build has no :telemetry to check calls against.
      lib = :telemetry
      assert trace(lib) == expected_trace()
      assert trace(lib) == trace(Telemetry)

      # Symbiont's events passed on to :telemetry, as Symbiont.Telemetry's moduledoc says.
      id = make_ref()
      me = self()

      :ok =
        Telemetry.attach_many(
          id,
          Telemetry.events(),
          fn e, m, meta, _ -> lib.execute(e, m, meta) end,
          nil
        )

      :ok =
        lib.attach(
          id,
          [:symbiont, :agent, :handle, :stop],
          fn e, m, meta, _ -> send(me, {e, m, meta}) end,
          nil
        )

      on_exit(fn -> Telemetry.detach(id) && lib.detach(id) end)

      topic = Symbiont.HostHelpers.unique_name("count.in")

      %{agent: agent} =
        Symbiont.HostHelpers.start_agent_host!("tel-lib",
          python: "sample_agents:Counter",
          config: %{"in" => topic, "out" => topic <> ".out"}
        )

      :ok = Symbiont.publish(topic, 1)

      assert_receive {[:symbiont, :agent, :handle, :stop], %{duration: d},
                      %{agent: ^agent, result: :ok}},
                     5_000

      assert d > 0
    end
  end

  defp expected_trace do
    [
      {:listed,
       [
         {:many, [:trace, :a], :cfg},
         {:many, [:trace, :b], :cfg},
         {:one, [:trace, :span, :stop], nil}
       ]},
      {:called, :many, [:trace, :a], [:n], [:m]},
      {:called, :many, [:trace, :b], [:n], [:m]},
      {:called, :span_start, [:trace, :span, :start], [:monotonic_time, :system_time],
       [:telemetry_span_context, :x]},
      {:called, :one, [:trace, :span, :stop], [:duration, :extra, :monotonic_time],
       [:telemetry_span_context, :y]},
      {:span_result, :done},
      {:context_shared, true},
      {:called, :span_start, [:trace, :span, :start], [:monotonic_time, :system_time],
       [:telemetry_span_context, :x]},
      {:called, :span_exception, [:trace, :span, :exception], [:duration, :monotonic_time],
       [:kind, :reason, :stacktrace, :telemetry_span_context, :x]},
      {:exception, :throw, :oops},
      {:failure, [:trace, :boom], :bad, :bad_cfg, :error, %RuntimeError{message: "boom"}},
      {:failed_detached, [], {:error, :not_found}},
      {:detached, :ok, {:error, :not_found},
       [
         {:one, [:trace, :span, :stop], nil},
         {:span_exception, [:trace, :span, :exception], nil},
         {:span_start, [:trace, :span, :start], nil}
       ]},
      {:already_exists, {:error, :already_exists}}
    ]
  end

  # Runs the same calls on `mod` (Symbiont.Telemetry or :telemetry), and returns what the
  # handlers saw and the calls returned, with times and references left out.
  defp trace(mod) do
    me = self()
    tag = make_ref()
    record = fn id -> fn e, m, meta, _config -> send(me, {tag, id, e, m, meta}) end end
    ids = [:many, :one, :span_start, :span_exception, :bad, :failure]
    for id <- ids, do: mod.detach(id)

    :ok = mod.attach_many(:many, [[:trace, :a], [:trace, :b]], record.(:many), :cfg)
    :ok = mod.attach(:one, [:trace, :span, :stop], record.(:one), nil)

    listed =
      for %{id: id, event_name: e, config: c, function: f} <- mod.list_handlers([:trace]),
          is_function(f, 4),
          do: {id, e, c}

    mod.execute([:trace, :a], %{n: 1}, %{m: 1})
    mod.execute([:trace, :b], %{n: 2}, %{m: 2})
    :ok = mod.attach(:span_start, [:trace, :span, :start], record.(:span_start), nil)
    :ok = mod.attach(:span_exception, [:trace, :span, :exception], record.(:span_exception), nil)
    result = mod.span([:trace, :span], %{x: 1}, fn -> {:done, %{extra: 1}, %{y: 2}} end)
    calls = collect(tag) ++ []

    contexts = for {_, [:trace, :span, _], _, meta} <- calls, do: meta.telemetry_span_context

    exception =
      try do
        mod.span([:trace, :span], %{x: 1}, fn -> throw(:oops) end)
      catch
        kind, reason -> {:exception, kind, reason}
      end

    calls2 = collect(tag)

    :ok = mod.attach(:bad, [:trace, :boom], fn _, _, _, _ -> raise "boom" end, :bad_cfg)
    :ok = mod.attach(:failure, [:telemetry, :handler, :failure], record.(:failure), nil)

    ExUnit.CaptureLog.capture_log(fn -> mod.execute([:trace, :boom], %{}, %{}) end)

    failure =
      for {:failure, [:telemetry, :handler, :failure], m, meta} <- collect(tag) do
        true = is_integer(m.monotonic_time) and is_integer(m.system_time)
        true = is_list(meta.stacktrace)

        {:failure, meta.event_name, meta.handler_id, meta.handler_config, meta.kind, meta.reason}
      end

    failed_detached = {:failed_detached, mod.list_handlers([:trace, :boom]), mod.detach(:bad)}
    detached = {:detached, mod.detach(:many), mod.detach(:many), listed_ids(mod)}
    already = {:already_exists, mod.attach(:one, [:other], record.(:one), nil)}
    for id <- ids, do: mod.detach(id)

    [{:listed, Enum.sort(listed)}] ++
      Enum.map(calls, &called/1) ++
      [{:span_result, result}, {:context_shared, match?([c, c], contexts)}] ++
      Enum.map(calls2, &called/1) ++
      [exception] ++ failure ++ [failed_detached, detached, already]
  end

  defp listed_ids(mod) do
    for(%{id: id, event_name: e, config: c} <- mod.list_handlers([:trace]), do: {id, e, c})
    |> Enum.sort()
  end

  defp called({id, e, m, meta}),
    do: {:called, id, e, m |> Map.keys() |> Enum.sort(), meta |> Map.keys() |> Enum.sort()}

  defp collect(tag) do
    receive do
      {^tag, id, e, m, meta} -> [{id, e, m, meta} | collect(tag)]
    after
      0 -> []
    end
  end

  describe "Symbiont's events, each triggered for real" do
    import ExUnit.CaptureLog
    import Symbiont.HostHelpers

    test "[:symbiont, :host, :stop]: a host stopped on purpose" do
      %{name: name, pid: pid, os_pid: os_pid} = start_host!()
      attach!([:symbiont, :host, :stop], &(&1.host == name))
      :ok = GenServer.stop(pid)

      assert_receive {[:symbiont, :host, :stop], %{uptime_ms: uptime},
                      %{host: ^name, os_pid: ^os_pid, agents: [], reason: :normal}}

      assert uptime >= 0
    end

    test "[:symbiont, :agent, :handle, ...]: a span per delivery, :exception when it failed" do
      [topic, out] = [unique_name("flaky.in"), unique_name("flaky.out")]

      %{agent: agent} =
        start_agent_host!("tel",
          python: "sample_agents:Flaky",
          config: %{"in" => topic, "out" => out}
        )

      for suffix <- [:start, :stop, :exception],
          do: attach!([:symbiont, :agent, :handle, suffix], &(&1.agent == agent))

      :ok = Symbiont.subscribe(out)
      payload = unique_name("payload")

      # Flaky fails the first attempt at each payload and handles the second.
      capture_log(fn ->
        :ok = Symbiont.publish(topic, payload)
        assert_receive %Symbiont.Event{topic: ^out}, 5_000
      end)

      assert_receive {[:symbiont, :agent, :handle, :start], %{monotonic_time: t0, system_time: _},
                      %{agent: ^agent, id: ^agent, topic: ^topic, timer: nil, attempt: 1} = start1}

      assert_receive {[:symbiont, :agent, :handle, :exception],
                      %{duration: failed, monotonic_time: t1},
                      %{result: :error, kind: :error, stacktrace: [], attempt: 1} = failure}

      assert failure.telemetry_span_context == start1.telemetry_span_context
      assert %{"type" => "RuntimeError", "message" => _} = failure.reason
      assert failed > 0 and t1 - t0 == failed

      # The retry is a span of its own.
      assert_receive {[:symbiont, :agent, :handle, :start], %{monotonic_time: t2},
                      %{attempt: 2} = start2}

      assert_receive {[:symbiont, :agent, :handle, :stop], %{duration: ok, monotonic_time: t3},
                      %{agent: ^agent, topic: ^topic, result: :ok, attempt: 2} = stop}

      assert stop.telemetry_span_context == start2.telemetry_span_context
      refute start2.telemetry_span_context == start1.telemetry_span_context
      assert ok > 0 and t3 - t2 == ok
    end

    test "[:symbiont, :mesh, :broadcast]: each event published, not the raw broadcasts" do
      topic = unique_name("tel.mesh")
      attach!([:symbiont, :mesh, :broadcast], &(&1.topic == topic))

      :ok = Symbiont.publish(topic, %{"n" => 1}, from: "tel-test")
      {:ok, bytes} = Symbiont.MsgPack.encode(%{"n" => 1})
      size = IO.iodata_length(bytes)

      assert_received {_, %{bytes: ^size},
                       %{mesh: Symbiont.Mesh, topic: ^topic, from: "tel-test"}}

      # The Phoenix.PubSub-style path stays as it was (bench/mesh.exs measures it).
      :ok = Symbiont.Mesh.broadcast(Symbiont.Mesh, topic, :raw)
      :ok = Symbiont.Mesh.local_broadcast(Symbiont.Mesh, topic, :raw)
      refute_received {[:symbiont, :mesh, :broadcast], _, _}
    end

    test "[:symbiont, :conductor, :action]: each remediation, here a restart after a kill" do
      %{name: name, os_pid: os_pid} = start_host!()
      attach!([:symbiont, :conductor, :action], &(&1.host == name))

      capture_log(fn ->
        Symbiont.Host.Reaper.kill(os_pid)
        assert_receive {:host_start, ^name, %{restarts: 1}}, 10_000
      end)

      assert_received {_, %{},
                       %{action: "restart", by: "supervisor", host: ^name, reason: reason}}

      assert reason =~ killed()
    end

    # Sends {event, measurements, metadata} to the test for the events `mine?` accepts
    # (other tests emit the same events meanwhile).
    defp attach!(event, mine?) do
      me = self()
      id = make_ref()

      :ok =
        Telemetry.attach(
          id,
          event,
          fn e, m, meta, _ -> if mine?.(meta), do: send(me, {e, m, meta}) end,
          nil
        )

      on_exit(fn -> Telemetry.detach(id) end)
    end
  end

  test "the events listed are those of the table in the moduledoc" do
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(Telemetry)

    documented =
      for [_, event] <- Regex.scan(~r/^\| `(\[:symbiont[^`]*\])` \|/m, doc),
          do: event |> Code.eval_string() |> elem(0)

    assert Enum.sort(documented) == Enum.sort(Telemetry.events())
  end
end
