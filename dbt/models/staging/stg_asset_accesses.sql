-- Page views (asset_accessed), without client IP, user agent, session or URL (personal data).
-- event_time is the happening's second (1970-01-01 when the event carried none: NULL here).
select
    happening_id,
    event_id,
    nullif(event_time, timestamptz '1970-01-01 00:00:00+00') as event_time,
    user_id,
    asset_id,
    asset_type,
    asset_subtype,
    asset_name,
    category,
    role,
    context_type,
    context_id,
    case when context_type = 'Course' then context_id end as course_id
from {{ source('canvas', 'asset_accesses') }}
