-- One row per distinct event as delivered, without its raw payload (personal data stays in the
-- warehouse). A happening delivered in both formats (Canvas and Caliper subscriptions) is two rows
-- with one happening_id: count distinct happening_id to count happenings.
-- Some events carry no event time: they are placed at the time the ingress received them.
select
    event_id,
    happening_id,
    event_name,
    format,
    event_time,
    received_at,
    coalesce(event_time, received_at) as occurred_at,
    user_id,
    context_type,
    context_id,
    case when context_type = 'Course' then context_id end as course_id
from {{ source('canvas', 'events') }}
