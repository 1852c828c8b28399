defmodule Symbiont.Agent.Server.Lifecycle do
  @moduledoc """
  Upgrade, move and retirement of an agent server: each waits for the deliveries in
  flight to finish, then runs the new spec, goes to another host, or hands what waits to
  its heir (or the dead letters) and stops.
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.Journal
  alias Symbiont.Agent.Delivery
  alias Symbiont.Agent.Server.{Deliveries, Durable, Health, Introspection, Link}
  alias Symbiont.Host.Out

  @linger_ms 100

  ## Upgrade and retirement

  # An upgrade goes on once nothing is in flight; a retirement hands what waits to its
  # heir and ends once nothing is in flight.
  @doc false
  def settle(%{lifecycle: %{upgrading: {from, spec}}, delivery: %{in_flight: 0}} = state) do
    {old, old_version, version} = {state.spec, state.version, describe_logic(spec)}
    if state.host_pid, do: Symbiont.Host.detach(state.host_pid, state.slot)
    GenServer.reply(from, {:ok, old})
    Logger.info("agent #{state.id} now runs #{version}", meta(state))
    out = Out.to(state.out, nil)

    state =
      set(%{state | spec: spec, version: version, status: :detached, out: out}, :lifecycle,
        upgrading: nil
      )

    # Another version: its signals are its own (Symbiont.Signals), compared with the
    # version before's baseline until it has one of its own.
    state =
      if old_version == version,
        do: state,
        else:
          set(state, :analytics,
            prev_version: old_version,
            version_base: {state.handled, state.failed},
            crash_log: []
          )

    # A restart on purpose (a new version, or the same one started again): it is judged
    # from now on. A quarantined agent stays out of its host.
    state = state |> Health.fresh_start("now runs #{version}") |> Introspection.observe()

    if state.host_pid && state.quarantined == nil, do: Link.reattach(state), else: state
  end

  # A move goes on once nothing is in flight: out of its slot, into one of the new host.
  def settle(%{lifecycle: %{moving: {from, host}}, delivery: %{in_flight: 0}} = state) do
    if state.host_pid && state.slot, do: Symbiont.Host.detach(state.host_pid, state.slot)

    Logger.info(
      "agent #{state.id} moves from host #{inspect(state.host)} to #{inspect(host)}",
      meta(state)
    )

    GenServer.reply(from, :ok)

    state =
      set(%{state | status: :detached, out: Out.to(state.out, nil)}, :lifecycle, moving: nil)

    state |> Link.move_to(host) |> Introspection.observe()
  end

  def settle(%{lifecycle: %{retiring: {_from, heir}}} = state) do
    {queued, delivery} = Delivery.take_queue(state.delivery)
    items = queued ++ state.intake.held
    state = state |> Deliveries.put_delivery(delivery) |> set(:intake, held: [])

    for {%Symbiont.Event{} = event, attempts} <- items do
      if heir,
        do: send(heir, event),
        else: Deliveries.dead_letter(state, event, "retired", attempts, nil)
    end

    state = Durable.journal_done(state, Enum.map(items, &elem(&1, 0)))

    # Once nothing is in flight it lingers a little, still handing over what arrives: a
    # publisher that picked it just before it unsubscribed may have sent one more.
    if state.delivery.in_flight == 0 and not state.lifecycle.lingering do
      Process.send_after(self(), :retired, @linger_ms)
      set(state, :lifecycle, lingering: true)
    else
      state
    end
  end

  def settle(state), do: state

  # A move (Symbiont.Agent.Server.move/3) waits for the deliveries in flight; not while
  # it is quarantined, or upgrading, moving or retiring.
  @doc false
  def move(state, from, host) do
    busy =
      Enum.find_value(
        [
          quarantined: state.quarantined,
          upgrading: state.lifecycle.upgrading,
          moving: state.lifecycle.moving,
          retiring: state.lifecycle.retiring
        ],
        fn {what, v} -> v != nil and what end
      )

    if busy,
      do:
        {:error,
         Symbiont.Error.new(
           if(busy == :quarantined, do: :refused, else: :unavailable),
           "agent #{state.id} is #{busy}: it cannot move now",
           agent: state.id
         )},
      else: {:ok, settle(set(state, :lifecycle, moving: {from, host}))}
  end

  # Gone once its heir (or the dead letters) has all its events: the journal has nothing
  # left. One it could not open is kept, for whoever looks into it.
  @doc false
  def retired(state, from) do
    case state.journal do
      nil ->
        :ok

      journal ->
        if Journal.opened?(journal), do: Journal.delete(journal), else: Journal.close(journal)
    end

    GenServer.reply(from, :ok)
    %{state | journal: nil}
  end
end
