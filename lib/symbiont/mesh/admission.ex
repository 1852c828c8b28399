defmodule Symbiont.Mesh.Admission do
  @moduledoc """
  The limits of a checked publish (`Symbiont.Mesh.publish/3` with `checked: true`): the
  load counters of this node's subscribers, the reservation of room in them (one event
  and the payload's bytes) that makes a `:reject` queue impossible to overfill however
  many publishers race, the choice of a queue group member that can take the event, and
  the refusals (`:journal_unavailable`, `:too_large`, `:overloaded`). `Symbiont.Mesh`
  keeps the API and the plain broadcasts; `Symbiont.Mesh.Server` the group index and
  round-robin counters read here.
  """

  alias Symbiont.Mesh.Server

  @typedoc """
  A subscriber's load counter: `{atomics, max, max_bytes, overflow}`. Slot 1 of the
  atomics is its queue length plus the events reserved on their way to it; slot 3 the
  payload bytes of its queue plus those reserved; slot 2 is 1 while it accepts nothing.
  """
  @type load :: {:atomics.atomics_ref(), pos_integer, pos_integer, atom}

  @typedoc "Why a subscriber cannot take an event."
  @type refusal :: :journal_unavailable | :too_large | :overloaded

  # The load counters of this node's subscribers of `topic` (plain ones given) that may
  # refuse it: %{pid => {atomics, max, max_bytes, overflow}}. Slot 1 of the atomics is
  # the subscriber's queue length plus the events reserved on their way to it; slot 3
  # the payload bytes of its queue plus those reserved; slot 2 is 1 while it accepts
  # nothing (a durable agent whose journal cannot be written).
  defp loads(m, topic, plain) do
    grouped = for {pid, {_group, meta}} <- Registry.lookup(m.groups, topic), do: {pid, meta}

    for {pid, %{load: {_ref, _max, _max_bytes, _overflow} = load}} <- plain ++ grouped,
        into: %{},
        do: {pid, load}
  end

  # Admits an event of `size` payload bytes to a subscriber with a load counter, taking
  # room in it (a reservation of one event and `size` bytes: the subscriber gives it back
  # when the event arrives, and knows by it that the publisher was told :ok), or says why
  # not: its journal cannot be written, the event is larger than its queue may hold, or it
  # rejects when full and has no room.
  #
  # Why a :reject queue is never overfilled, in events or bytes, and an event admitted
  # is never dropped for room, nor refused while there is room for it: each slot is the
  # subscriber's queue plus the reservations made and not yet given back. Its server
  # moves a slot by as much as its queue changes (never puts it), and turns a
  # reservation into the event's place in the queue in the same add (an admitted event
  # that is queued moves nothing: it was counted already), or gives it back once it
  # knows the event will not be queued (sent at once, a duplicate...). So an event is
  # counted once, as reserved or as queued, at every instant: never neither (two
  # publishers could then take the same room), never both (a publisher would be refused
  # room there is). A reservation is one add_get per slot: it returns the sum with every
  # other reservation and the queue of that instant, so two publishers racing for the
  # last room cannot both see it free (whichever adds second reads the first's share).
  # Count first, then bytes: one that gets the count and not the bytes takes its count
  # back; meanwhile another may read one event too many and be refused while the room
  # is being given back (a refusal too many, never an admission too many; with payloads
  # of one size, never). An event that comes the unchecked way is queued only if it fits
  # beside the reservations (the server reads the same slots), so it never takes room
  # reserved for one on its way.
  @doc """
  Admits an event of `size` payload bytes to a subscriber with load counter `load`
  (`{atomics, max, max_bytes, overflow}`), taking room in it, or says why not
  (`:journal_unavailable`, `:too_large`, `:overloaded`): see the comment in the source
  for why racing publishers cannot overfill a `:reject` queue.

      iex> ref = :atomics.new(3, signed: true)
      iex> load = {ref, 1, 100, :reject}
      iex> {Symbiont.Mesh.Admission.reserve(load, 10), Symbiont.Mesh.Admission.reserve(load, 10)}
      {:ok, :overloaded}
      iex> {:atomics.get(ref, 1), :atomics.get(ref, 3)}
      {1, 10}
      iex> Symbiont.Mesh.Admission.reserve({ref, 5, 100, :drop_oldest}, 101)
      :too_large
  """
  @spec reserve(load, non_neg_integer) :: :ok | refusal
  def reserve({ref, max, max_bytes, overflow}, size) do
    cond do
      :atomics.get(ref, 2) != 0 ->
        :journal_unavailable

      size > max_bytes ->
        :too_large

      overflow != :reject ->
        :atomics.add(ref, 1, 1)
        :atomics.add(ref, 3, size)
        :ok

      :atomics.add_get(ref, 1, 1) > max ->
        :atomics.sub(ref, 1, 1)
        :overloaded

      :atomics.add_get(ref, 3, size) > max_bytes ->
        :atomics.sub(ref, 3, size)
        :atomics.sub(ref, 1, 1)
        :overloaded

      true ->
        :ok
    end
  end

  defp release(loads, pid, size) do
    ref = elem(loads[pid], 0)
    :atomics.sub(ref, 1, 1)
    :atomics.sub(ref, 3, size)
  end

  @doc """
  A checked publish (`Symbiont.Mesh.publish/3` with `checked: true`) on the mesh of
  `m` (its meta): room is reserved in every plain subscriber of this node with a load
  counter and in one member of each queue group, then the event is broadcast (with this
  module as the dispatcher, `dispatch/3`) and sent to the picked members, `reserved:
  true` in the copy of each one it reserved room in; or nothing is sent and the first
  refusal is returned, what was reserved given back.

  Each subscriber's copy says only whether room was reserved for it: the set of those
  pids stays with the publisher (an event that carried it would cost every one of N
  subscribers a copy of N pids: N² per publish).
  """
  @spec checked_publish(map, Symbiont.Event.t()) :: :ok | {:error, refusal | term}
  def checked_publish(m, %Symbiont.Event{topic: topic} = event) do
    subscribers = m.adapter.subscribers(m.adapter_name, topic)
    loads = loads(m, topic, subscribers)
    plain = for {pid, _} <- subscribers, Map.has_key?(loads, pid), do: pid
    size = byte_size(event.payload)

    with {:ok, reserved} <- reserve_all(plain, loads, size, []),
         {:ok, picks, reserved} <- pick_groups(m, topic, loads, size, reserved) do
      event = %{event | reserved: false}
      reserved = Map.from_keys(reserved, true)
      message = {__MODULE__, event, node(), reserved}
      :ok = m.adapter.broadcast(m.adapter_name, :none, topic, message, __MODULE__)
      Enum.each(picks, &send(&1, copy_for(&1, event, reserved)))
    end
  end

  @doc """
  The dispatcher of a checked publish's broadcast (as `Symbiont.Mesh.dispatch/3`): each
  subscriber in `entries` but `from` gets the event, `reserved: true` in the copy of
  those the publisher reserved room in. On another node (the broadcast forwarded there)
  no one was: the reservations are of the publisher's node, whose name the message
  carries, and the set of them is not looked at.
  """
  @spec dispatch([{pid, term}], pid | :none, {module, Symbiont.Event.t(), node, map}) :: :ok
  def dispatch(entries, from, {__MODULE__, event, origin, reserved}) do
    reserved = if origin == node(), do: reserved, else: %{}

    for {pid, _} <- entries, pid != from, do: send(pid, copy_for(pid, event, reserved))
    :ok
  end

  defp copy_for(pid, event, reserved) when is_map_key(reserved, pid),
    do: %{event | reserved: true}

  defp copy_for(_pid, event, _reserved), do: event

  defp reserve_all([], _loads, _size, reserved), do: {:ok, reserved}

  defp reserve_all([pid | rest], loads, size, reserved) do
    case reserve(loads[pid], size) do
      :ok -> reserve_all(rest, loads, size, [pid | reserved])
      why -> give_back(reserved, loads, size, why)
    end
  end

  defp give_back(reserved, loads, size, why) do
    Enum.each(reserved, &release(loads, &1, size))
    {:error, why}
  end

  # The members of a group in the order to try them: from the next one round robin.
  defp rotate(_m, _topic, _group, [_] = members), do: members

  defp rotate(m, topic, group, members) do
    {head, tail} = Enum.split(members, Server.next(m, topic, group, length(members)))
    tail ++ head
  end

  # One member of each group: round robin from the group's counter, skipping members
  # that cannot take the event (see reserve/1).
  defp pick_groups(m, topic, loads, size, reserved) do
    Enum.reduce_while(Server.groups(m, topic), {:ok, [], reserved}, fn group,
                                                                       {:ok, picks, reserved} ->
      case :pg.get_members(m.scope, {topic, group}) do
        [] ->
          {:cont, {:ok, picks, reserved}}

        members ->
          case pick(rotate(m, topic, group, members), loads, size, []) do
            {:ok, pid} ->
              reserved = if Map.has_key?(loads, pid), do: [pid | reserved], else: reserved
              {:cont, {:ok, [pid | picks], reserved}}

            {:error, why} ->
              {:halt, give_back(reserved, loads, size, why)}
          end
      end
    end)
  end

  # The first member that can take the event; or why none can: :journal_unavailable or
  # :too_large when every one refused for that, :overloaded otherwise.
  defp pick([], _loads, _size, [why | whys]),
    do: {:error, if(Enum.all?(whys, &(&1 == why)), do: why, else: :overloaded)}

  defp pick([pid | rest], loads, size, whys) do
    case Map.has_key?(loads, pid) and reserve(loads[pid], size) do
      false -> {:ok, pid}
      :ok -> {:ok, pid}
      why -> pick(rest, loads, size, [why | whys])
    end
  end
end
