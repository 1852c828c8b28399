# `mix run check.exs`: an order goes through both instances' agents; prints what the
# node runs. test/symbiont/embedded_app_test.exs runs it.
:ok = Symbiont.subscribe("shop.billed")
order = %{"id" => 1, "items" => [%{"price" => 3, "qty" => 2}, %{"price" => 5, "qty" => 1}]}

# The agents subscribe as they start: publish until the first bill comes back.
billed =
  Enum.find_value(1..150, fn _ ->
    :ok = Symbiont.publish("shop.order", order)

    receive do
      %Symbiont.Event{topic: "shop.billed"} = event -> Symbiont.Event.decode(event)
    after
      200 -> nil
    end
  end)

IO.puts("billed: #{inspect(billed)}")
IO.puts("instances: #{inspect(Symbiont.Instance.list())}")

agents = for a <- Symbiont.agents(), do: {a.name, Symbiont.Instance.owner(a.name)}
IO.puts("agents: #{inspect(Enum.sort(agents))}")
