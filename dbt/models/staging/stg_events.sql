-- One row per distinct event as delivered, without its raw payload (personal data stays in the
-- warehouse). A happening delivered in both formats (Canvas and Caliper subscriptions) is two rows
-- with one happening_id: count distinct happening_id to count happenings.
-- Some events carry no event time: the warehouse files them at 1970-01-01 (event_time is the partition
-- key and part of the key, so it cannot be NULL); here they are NULL again, and placed at the time the
-- ingress received them.
select
    event_id,
    happening_id,
    event_name,
    format,
    nullif(event_time, timestamptz '1970-01-01 00:00:00+00') as event_time,
    received_at,
    coalesce(nullif(event_time, timestamptz '1970-01-01 00:00:00+00'), received_at) as occurred_at,
    user_id,
    context_type,
    context_id,
    case when context_type = 'Course' then context_id end as course_id
from {{ source('canvas', 'events') }}
